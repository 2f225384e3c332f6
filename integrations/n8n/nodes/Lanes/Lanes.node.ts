import type {
	IDataObject,
	IExecuteFunctions,
	INodeExecutionData,
	INodeType,
	INodeTypeDescription,
} from 'n8n-workflow';
import { NodeConnectionTypes, NodeOperationError, sleep } from 'n8n-workflow';

import {
	enqueueFields,
	jobIdField,
	jobOperations,
	queueFields,
	queueOperations,
	resourceProperty,
	waitFields,
} from './description';
import { gatewayCall, gatewayError, gatewayRequest, toNodeError } from './transport';
import { waitForJob } from './wait';

/** Most jobs the gateway takes in one batch call. */
const MAX_BATCH = 1000;

/**
 * Lanes: enqueue jobs, follow them and act on them through the Lanes gateway's HTTP API.
 * Programmatic rather than declarative: Wait repeats the gateway's wait API until the job is
 * finished, Enqueue Batch sends every input item in one call, and gateway errors are mapped to node errors that carry
 * the gateway's message and the field at fault.
 */
export class Lanes implements INodeType {
	description: INodeTypeDescription = {
		displayName: 'Lanes',
		name: 'lanes',
		icon: { light: 'file:../../icons/lanes.svg', dark: 'file:../../icons/lanes.dark.svg' },
		group: ['transform'],
		version: 1,
		subtitle: '={{$parameter["operation"] + ": " + $parameter["resource"]}}',
		description: 'Enqueue and follow jobs in Lanes, the per-key FIFO job queue',
		defaults: { name: 'Lanes' },
		usableAsTool: true,
		inputs: [NodeConnectionTypes.Main],
		outputs: [NodeConnectionTypes.Main],
		credentials: [{ name: 'lanesApi', required: true }],
		properties: [
			resourceProperty,
			jobOperations,
			queueOperations,
			...enqueueFields,
			jobIdField,
			...waitFields,
			...queueFields,
		],
	};

	async execute(this: IExecuteFunctions): Promise<INodeExecutionData[][]> {
		const items = this.getInputData();
		const resource = this.getNodeParameter('resource', 0) as string;
		const operation = this.getNodeParameter('operation', 0) as string;
		if (resource === 'job' && operation === 'enqueueBatch') {
			return [await enqueueBatch(this, items)];
		}
		const out: INodeExecutionData[] = [];
		const continueOnFail = this.continueOnFail();
		for (let i = 0; i < items.length; i++) {
			const run = () => runOne(this, resource, operation, i, items[i]);
			if (!continueOnFail) {
				out.push({ json: await run(), pairedItem: { item: i } });
				continue;
			}
			const json = await run().then(
				(value) => value,
				(error: Error) => errorJson(error),
			);
			out.push({ json, pairedItem: { item: i } });
		}
		return [out];
	}
}

/** The output item of a failed item under "Continue On Fail". */
function errorJson(error: Error): IDataObject {
	const gateway = (error as { context?: IDataObject }).context?.gateway as IDataObject | undefined;
	return gateway ? { error: error.message, ...gatewayFields(gateway) } : { error: error.message };
}

function gatewayFields(gateway: IDataObject): IDataObject {
	const fields: IDataObject = { code: gateway.code, http_code: gateway.status };
	if (gateway.field !== undefined) fields.field = gateway.field;
	return fields;
}

async function runOne(
	ctx: IExecuteFunctions,
	resource: string,
	operation: string,
	i: number,
	item: INodeExecutionData,
): Promise<IDataObject> {
	if (resource === 'job') {
		switch (operation) {
			case 'enqueue':
				return await gatewayCall(ctx, 'POST', '/api/jobs', i, { body: enqueueBody(ctx, i, item) });
			case 'get':
				return await gatewayCall(ctx, 'GET', `/api/jobs/${jobId(ctx, i)}`, i);
			case 'wait':
				return await waitJob(ctx, i);
			case 'cancel':
				return await gatewayCall(ctx, 'POST', `/api/jobs/${jobId(ctx, i)}/cancel`, i);
			case 'retry':
				return await gatewayCall(ctx, 'POST', `/api/jobs/${jobId(ctx, i)}/retry`, i);
		}
	}
	if (resource === 'queue') {
		switch (operation) {
			case 'getStats':
				return await getStats(ctx, i);
			case 'wakeWorkers':
				return await wakeWorkers(ctx, i);
		}
	}
	throw new NodeOperationError(ctx.getNode(), `Unknown operation ${resource}: ${operation}`, {
		itemIndex: i,
	});
}

/** The job ID parameter: a positive integer. */
function jobId(ctx: IExecuteFunctions, i: number): string {
	const raw = String(ctx.getNodeParameter('jobId', i, '') ?? '').trim();
	if (!/^[1-9][0-9]*$/.test(raw)) {
		throw new NodeOperationError(
			ctx.getNode(),
			raw === ''
				? 'Job ID is empty: map it from the output of Enqueue ({{ $json.job_id }})'
				: `Job ID "${raw}" is not a job ID (a positive integer)`,
			{ itemIndex: i },
		);
	}
	return raw;
}

function payloadOf(ctx: IExecuteFunctions, i: number, item: INodeExecutionData): unknown {
	if (ctx.getNodeParameter('payloadSource', i, 'item') === 'item') return item.json;
	const raw = ctx.getNodeParameter('payload', i, '{}') as unknown;
	if (typeof raw !== 'string') return raw;
	try {
		return JSON.parse(raw) as unknown;
	} catch (error) {
		throw new NodeOperationError(
			ctx.getNode(),
			`Payload JSON is not valid JSON: ${error.message}`,
			{
				itemIndex: i,
			},
		);
	}
}

/** The POST /api/jobs body of item `i`; empty fields are left out (the gateway refuses ""). */
function enqueueBody(ctx: IExecuteFunctions, i: number, item: INodeExecutionData): IDataObject {
	const body: IDataObject = {
		queue: String(ctx.getNodeParameter('queue', i, '')).trim(),
		payload: payloadOf(ctx, i, item) as IDataObject,
	};
	const lane = optionalKey(ctx, i, 'lane', 'Lane');
	if (lane !== undefined) body.lane = lane;
	const idempotencyKey = optionalKey(ctx, i, 'idempotencyKey', 'Idempotency Key');
	if (idempotencyKey !== undefined) body.idempotency_key = idempotencyKey;
	const options = ctx.getNodeParameter('options', i, {}) as IDataObject;
	if (options.priorityLevel !== undefined) body.priority = Number(options.priorityLevel);
	else if (options.priority !== undefined) body.priority = options.priority;
	if (options.delaySeconds !== undefined && Number(options.delaySeconds) > 0) {
		body.delay_seconds = Math.round(Number(options.delaySeconds));
	}
	if (options.runAt !== undefined && options.runAt !== '')
		body.run_at = runAt(ctx, i, options.runAt);
	// The job's own limits (absent: its queue's settings).
	const limits: Array<[string, string]> = [
		['maxAttempts', 'max_attempts'],
		['timeoutMs', 'timeout_ms'],
		['softTimeoutMs', 'soft_timeout_ms'],
		['backoffInitialMs', 'backoff_initial_ms'],
		['backoffMaxMs', 'backoff_max_ms'],
	];
	for (const [option, field] of limits) {
		if (options[option] !== undefined) body[field] = Math.round(Number(options[option]));
	}
	if (options.replace === true) {
		if (idempotencyKey === undefined) {
			throw new NodeOperationError(
				ctx.getNode(),
				'Replace Waiting Job needs an Idempotency Key: it names the job to replace',
				{ itemIndex: i },
			);
		}
		body.replace = true;
	}
	if (options.callbackUrl) body.callback_url = String(options.callbackUrl);
	if (options.failureCallbackUrl) body.failure_callback_url = String(options.failureCallbackUrl);
	return body;
}

/**
 * A lane or idempotency key: undefined when the field is left empty. A field that is filled in
 * (an expression) but gives nothing for this item is an error, never "no lane": a broken
 * expression must not silently drop an establishment's ordering or the deduplication.
 */
function optionalKey(
	ctx: IExecuteFunctions,
	i: number,
	name: string,
	label: string,
): string | undefined {
	const value = ctx.getNodeParameter(name, i, '') as unknown;
	if (typeof value === 'number' && Number.isFinite(value)) return String(value);
	if (typeof value === 'string' && value !== '') return value;
	const raw = ctx.getNode().parameters[name];
	const empty = value === undefined || value === null || value === '';
	if (empty && (raw === undefined || raw === '')) return undefined;
	throw new NodeOperationError(
		ctx.getNode(),
		empty
			? `${label} is empty for this item: its expression gave no value`
			: `${label} must be a string or a number, not ${Array.isArray(value) ? 'an array' : typeof value}`,
		{
			itemIndex: i,
			description: `Fix the expression, or clear the ${label} field for jobs without one.`,
		},
	);
}

function runAt(ctx: IExecuteFunctions, i: number, value: unknown): string {
	const when = new Date(String(value));
	if (Number.isNaN(when.getTime())) {
		throw new NodeOperationError(ctx.getNode(), `Run At "${String(value)}" is not a date`, {
			itemIndex: i,
		});
	}
	return when.toISOString();
}

/** One POST /api/jobs/batch per 1,000 items (each call is all or nothing). */
async function enqueueBatch(
	ctx: IExecuteFunctions,
	items: INodeExecutionData[],
): Promise<INodeExecutionData[]> {
	const out: INodeExecutionData[] = [];
	const continueOnFail = ctx.continueOnFail();
	for (let start = 0; start < items.length; start += MAX_BATCH) {
		const end = Math.min(items.length, start + MAX_BATCH);
		const jobs: IDataObject[] = [];
		for (let i = start; i < end; i++) jobs.push(enqueueBody(ctx, i, items[i]));
		const reply = await gatewayRequest(ctx, 'POST', '/api/jobs/batch', start, {
			body: { jobs },
			timeoutMs: 120_000,
		});
		const error = gatewayError(reply);
		if (error) {
			// `jobs[3].queue` names the item at fault: report it as that item.
			const at = /^jobs\[(\d+)\]/.exec(error.field ?? '');
			const nodeError = toNodeError(ctx, error, start + (at ? Number(at[1]) : 0));
			if (!continueOnFail) throw nodeError;
			for (let i = start; i < end; i++) {
				out.push({ json: errorJson(nodeError), pairedItem: { item: i } });
			}
			continue;
		}
		const enqueued = (reply.body.jobs ?? []) as IDataObject[];
		enqueued.forEach((job, k) => out.push({ json: job, pairedItem: { item: start + k } }));
	}
	return out;
}

async function waitJob(ctx: IExecuteFunctions, i: number): Promise<IDataObject> {
	const id = jobId(ctx, i);
	const timeoutS = Number(ctx.getNodeParameter('timeout', i, 300));
	const options = ctx.getNodeParameter('waitOptions', i, {}) as IDataObject;
	const outcome = await waitForJob(
		{
			// The gateway holds the request up to waitS; the HTTP timeout leaves it room.
			fetch: async (waitS) =>
				await gatewayRequest(ctx, 'GET', `/api/jobs/${id}`, i, {
					qs: { wait: waitS },
					timeoutMs: (waitS + 30) * 1000,
				}),
			sleep: async (ms) => await sleep(ms),
			now: () => Date.now(),
		},
		{ timeoutMs: timeoutS * 1000 },
	);
	if (outcome.kind === 'error') {
		const error = gatewayError(outcome.reply);
		if (error) throw toNodeError(ctx, error, i);
	}
	if (outcome.kind === 'timeout') {
		if (options.onTimeout === 'output') return { ...outcome.job, wait_timed_out: true };
		throw new NodeOperationError(
			ctx.getNode(),
			`Job ${id} is still ${String(outcome.job.status)} after ${timeoutS} s`,
			{
				itemIndex: i,
				description: 'Raise Timeout, or choose "Output the Job As It Is" under On Timeout.',
			},
		);
	}
	const job = outcome.kind === 'done' ? outcome.job : {};
	if (options.errorOnFailure === true && job.status !== 'completed') {
		throw new NodeOperationError(
			ctx.getNode(),
			`Job ${id} ended ${String(job.status)}${job.error ? `: ${String(job.error)}` : ''}`,
			{ itemIndex: i },
		);
	}
	return job;
}

async function getStats(ctx: IExecuteFunctions, i: number): Promise<IDataObject> {
	const options = ctx.getNodeParameter('statsOptions', i, {}) as IDataObject;
	const qs: IDataObject = {};
	if (options.queue) qs.queue = String(options.queue);
	const body = await gatewayCall(ctx, 'GET', '/api/queue/stats', i, { qs });
	return (body.stats ?? body) as IDataObject;
}

async function wakeWorkers(ctx: IExecuteFunctions, i: number): Promise<IDataObject> {
	const options = ctx.getNodeParameter('wakeOptions', i, {}) as IDataObject;
	const body: IDataObject = { requested_by: String(options.requestedBy ?? 'n8n') };
	if (options.workersToStart !== undefined) body.workers_to_start = Number(options.workersToStart);
	if (options.queue) body.queue = String(options.queue);
	return await gatewayCall(ctx, 'POST', '/api/wake-worker', i, { body });
}
