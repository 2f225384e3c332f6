import type {
	IDataObject,
	IHookFunctions,
	INodeType,
	INodeTypeDescription,
	IWebhookFunctions,
	IWebhookResponseData,
} from 'n8n-workflow';
import { NodeConnectionTypes } from 'n8n-workflow';

import { eventItem, eventSelected, eventType } from './events';
import { signingKeys, verifySignature } from './signature';

/**
 * Lanes Trigger: receives Lanes' webhooks (per-job callbacks and global events), verifies their
 * Standard Webhooks signature over the raw body with the credential's secret, keeps the
 * selected event types and outputs the parsed event. A request that is not authentic is
 * answered 401 and starts no execution; an authentic one of another type is answered 200 (so
 * Lanes does not retry it) and starts none either.
 */
export class LanesTrigger implements INodeType {
	description: INodeTypeDescription = {
		displayName: 'Lanes Trigger',
		name: 'lanesTrigger',
		icon: { light: 'file:../../icons/lanes.svg', dark: 'file:../../icons/lanes.dark.svg' },
		group: ['trigger'],
		version: 1,
		subtitle: '={{$parameter["events"].join(", ")}}',
		description: 'Starts the workflow when Lanes sends a signed job callback or event',
		defaults: { name: 'Lanes Trigger' },
		inputs: [],
		outputs: [NodeConnectionTypes.Main],
		credentials: [{ name: 'lanesApi', required: true }],
		webhooks: [
			{
				name: 'default',
				httpMethod: 'POST',
				responseMode: '={{$parameter["responseMode"]}}',
				path: '={{$parameter["path"]}}',
				isFullPath: true,
			},
		],
		properties: [
			{
				displayName:
					"Point Lanes at this node's production URL: a job's Callback URL, or an entry of the coordinator's LANES_EVENT_ENDPOINTS. The credential's Webhook Secret must be the coordinator's (or the endpoint's) secret.",
				name: 'notice',
				type: 'notice',
				default: '',
			},
			{
				displayName: 'Path',
				name: 'path',
				type: 'string',
				default: '',
				placeholder: 'lanes-events',
				description:
					"The URL path after /webhook/ (e.g. lanes-events → https://your-n8n/webhook/lanes-events). Empty: the node's webhook ID.",
			},
			{
				displayName: 'Events',
				name: 'events',
				type: 'multiOptions',
				required: true,
				options: [
					{
						name: 'agent.* (Worker Awake or Asleep)',
						value: 'agent.*',
						description: 'Awake (a worker was woken or got a job) or asleep (it found no work)',
					},
					{
						name: 'Any Event',
						value: '*',
						description: 'Every callback and event Lanes sends',
					},
					{
						name: 'events.summary',
						value: 'events.summary',
						description: 'Flood control held events back and sums them up',
					},
					{
						name: 'job.completed',
						value: 'job.completed',
						description: "A job completed (a job's callback URL)",
					},
					{
						name: 'job.failed',
						value: 'job.failed',
						description: 'A job failed for good (callback or global event)',
					},
					{
						name: 'lane.blocked',
						value: 'lane.blocked',
						description: 'A lane of a block-policy queue stopped on a failed job',
					},
					{
						name: 'watchdog.* (Alert or Cleared)',
						value: 'watchdog.*',
						description:
							'A watchdog condition started (watchdog.alert) or ended (watchdog.cleared)',
					},
				],
				default: ['*'],
				description:
					'Only these event types start the workflow; others are acknowledged and dropped',
			},
			{
				displayName: 'Respond',
				name: 'responseMode',
				type: 'options',
				options: [
					{
						name: 'Immediately',
						value: 'onReceived',
						description: 'Answer 200 as soon as the delivery is verified',
					},
					{
						name: 'When Last Node Finishes',
						value: 'lastNode',
						description:
							'Answer when the workflow has run: if it fails, Lanes gets an error and delivers the event again later',
					},
				],
				default: 'onReceived',
			},
		],
	};

	// Lanes has no API to register webhooks: the URL is given to Lanes by its operator (a job's
	// callback URL or LANES_EVENT_ENDPOINTS), so there is nothing to create or delete remotely.
	webhookMethods = {
		default: {
			async checkExists(this: IHookFunctions): Promise<boolean> {
				return true;
			},
			async create(this: IHookFunctions): Promise<boolean> {
				return true;
			},
			async delete(this: IHookFunctions): Promise<boolean> {
				return true;
			},
		},
	};

	async webhook(this: IWebhookFunctions): Promise<IWebhookResponseData> {
		const req = this.getRequestObject();
		const res = this.getResponseObject();
		const refuse = (status: number, error: string): IWebhookResponseData => {
			res.status(status).json({ ok: false, error });
			return { noWebhookResponse: true };
		};

		const credentials = await this.getCredentials('lanesApi');
		let keys: Buffer[];
		try {
			keys = signingKeys(String(credentials.webhookSecret ?? ''));
		} catch (error) {
			// A 5xx: Lanes keeps the delivery and retries it once the secret is fixed.
			return refuse(500, `Lanes Trigger: ${(error as Error).message}`);
		}
		if (keys.length === 0) {
			return refuse(500, 'Lanes Trigger: set the Webhook Secret of the Lanes API credential');
		}

		if (!req.rawBody) await req.readRawBody();
		const raw = req.rawBody ?? Buffer.alloc(0);
		const why = verifySignature(keys, req.headers, raw, Math.floor(Date.now() / 1000));
		if (why !== null) return refuse(401, why);

		let body: IDataObject;
		try {
			const parsed = JSON.parse(raw.toString('utf8')) as unknown;
			if (!parsed || typeof parsed !== 'object' || Array.isArray(parsed)) {
				return refuse(400, 'the body is not a JSON object');
			}
			body = parsed as IDataObject;
		} catch {
			return refuse(400, 'the body is not JSON');
		}

		const selected = this.getNodeParameter('events', []) as string[];
		const type = eventType(body);
		if (!eventSelected(type, selected)) {
			return { webhookResponse: { ok: true, ignored: type } };
		}
		const webhookId = String(req.headers['webhook-id'] ?? '');
		return { workflowData: [this.helpers.returnJsonArray([eventItem(body, webhookId)])] };
	}
}
