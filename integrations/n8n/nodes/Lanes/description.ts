import type { INodeProperties } from 'n8n-workflow';

const enqueueOps = { resource: ['job'], operation: ['enqueue', 'enqueueBatch'] };
const jobIdOps = { resource: ['job'], operation: ['get', 'wait', 'cancel', 'retry'] };

export const resourceProperty: INodeProperties = {
	displayName: 'Resource',
	name: 'resource',
	type: 'options',
	noDataExpression: true,
	options: [
		{ name: 'Job', value: 'job' },
		{ name: 'Queue', value: 'queue' },
	],
	default: 'job',
};

export const jobOperations: INodeProperties = {
	displayName: 'Operation',
	name: 'operation',
	type: 'options',
	noDataExpression: true,
	displayOptions: { show: { resource: ['job'] } },
	options: [
		{
			name: 'Cancel',
			value: 'cancel',
			description:
				'Cancel a pending job at once; a running one stops at its next heartbeat; a failed one frees its lane',
			action: 'Cancel a job',
		},
		{
			name: 'Enqueue',
			value: 'enqueue',
			description: 'Add one job per input item',
			action: 'Enqueue a job',
		},
		{
			name: 'Enqueue Batch',
			value: 'enqueueBatch',
			description: 'Add one job per input item in a single call: all or nothing',
			action: 'Enqueue a batch of jobs',
		},
		{
			name: 'Get',
			value: 'get',
			description: "Get a job's status, progress, result and error",
			action: 'Get a job',
		},
		{
			name: 'Retry',
			value: 'retry',
			description: 'Put a failed or cancelled job back to pending, attempts reset',
			action: 'Retry a job',
		},
		{
			name: 'Wait',
			value: 'wait',
			description: 'Wait until a job is completed, failed or cancelled, and get it',
			action: 'Wait for a job',
		},
	],
	default: 'enqueue',
};

export const queueOperations: INodeProperties = {
	displayName: 'Operation',
	name: 'operation',
	type: 'options',
	noDataExpression: true,
	displayOptions: { show: { resource: ['queue'] } },
	options: [
		{
			name: 'Get Stats',
			value: 'getStats',
			description: 'Counts of jobs by status, per queue, and connected workers',
			action: 'Get queue statistics',
		},
		{
			name: 'Wake Workers',
			value: 'wakeWorkers',
			description: 'Wake asleep workers for the jobs ready now (busy ones are never disturbed)',
			action: 'Wake workers',
		},
	],
	default: 'getStats',
};

export const enqueueFields: INodeProperties[] = [
	{
		displayName: 'Queue',
		name: 'queue',
		type: 'string',
		required: true,
		default: '',
		placeholder: 'invoice_import',
		description: 'Queue name: letters, digits and _ . : - (at most 128 bytes).',
		displayOptions: { show: enqueueOps },
	},
	{
		displayName: 'Lane',
		name: 'lane',
		type: 'string',
		default: '',
		placeholder: '={{ $json.establishment_id }}',
		description:
			'Jobs of one lane run one at a time, in enqueue order (e.g. the establishment ID). Leave empty for a job without ordering.',
		displayOptions: { show: enqueueOps },
	},
	{
		displayName: 'Payload',
		name: 'payloadSource',
		type: 'options',
		options: [
			{
				name: 'Whole Input Item',
				value: 'item',
				description: "The input item's JSON is the job's payload",
			},
			{
				name: 'JSON',
				value: 'json',
				description: 'A JSON value (use expressions to build it from the item)',
			},
		],
		default: 'item',
		displayOptions: { show: enqueueOps },
	},
	{
		displayName: 'Payload JSON',
		name: 'payload',
		type: 'json',
		default: '{}',
		description: "The job's input, handed to the handler on its standard input",
		displayOptions: { show: { ...enqueueOps, payloadSource: ['json'] } },
	},
	{
		displayName: 'Idempotency Key',
		name: 'idempotencyKey',
		type: 'string',
		default: '',
		placeholder: '=invoice-{{ $json.invoice_id }}',
		description:
			'Enqueueing again with the same key in the same queue returns the existing job instead of adding one (created is then false)',
		displayOptions: { show: enqueueOps },
	},
	{
		displayName: 'Options',
		name: 'options',
		type: 'collection',
		placeholder: 'Add Option',
		default: {},
		displayOptions: { show: enqueueOps },
		options: [
			{
				displayName: 'Backoff Initial (Ms)',
				name: 'backoffInitialMs',
				type: 'number',
				typeOptions: { minValue: 0, maxValue: 2_592_000_000 },
				default: 5000,
				description:
					"This job's first wait before a retry, in milliseconds (0 to 30 days), doubled at each attempt; default: its queue's",
			},
			{
				displayName: 'Backoff Max (Ms)',
				name: 'backoffMaxMs',
				type: 'number',
				typeOptions: { minValue: 0, maxValue: 2_592_000_000 },
				default: 3_600_000,
				description:
					"This job's longest wait before a retry, in milliseconds (0 to 30 days, at least Backoff Initial); default: its queue's",
			},
			{
				displayName: 'Callback URL',
				name: 'callbackUrl',
				type: 'string',
				default: '',
				placeholder: 'https://n8n.example.com/webhook/lanes-job-done',
				description:
					'Lanes POSTs a signed job.completed event here when the job completes (and job.failed when it fails for good, unless a failure callback URL is set)',
			},
			{
				displayName: 'Delay (Seconds)',
				name: 'delaySeconds',
				type: 'number',
				typeOptions: { minValue: 0 },
				default: 0,
				description: 'Run no earlier than this many seconds from now',
			},
			{
				displayName: 'Failure Callback URL',
				name: 'failureCallbackUrl',
				type: 'string',
				default: '',
				placeholder: 'https://n8n.example.com/webhook/lanes-job-failed',
				description: 'Lanes POSTs a signed job.failed event here when the job fails for good',
			},
			{
				displayName: 'Max Attempts',
				name: 'maxAttempts',
				type: 'number',
				typeOptions: { minValue: 1, maxValue: 1000 },
				default: 3,
				description: "Attempts before this job ends failed (1 to 1000); default: its queue's",
			},
			{
				displayName: 'Priority',
				name: 'priority',
				type: 'options',
				options: [
					{ name: 'High', value: 'high' },
					{ name: 'Normal', value: 'normal' },
					{ name: 'Low', value: 'low' },
				],
				default: 'normal',
				description: 'Among ready lanes, higher priority runs first',
			},
			{
				displayName: 'Priority Level',
				name: 'priorityLevel',
				type: 'number',
				typeOptions: { minValue: -1000, maxValue: 1000 },
				default: 0,
				description:
					'An exact priority from -1000 to 1000 (high is 10, low -10); overrides Priority when set',
			},
			{
				displayName: 'Replace Waiting Job',
				name: 'replace',
				type: 'boolean',
				default: false,
				description:
					"Whether a repeat of the Idempotency Key replaces the payload of that key's job while it still waits (replaced is then true); a running or finished job is returned unchanged",
			},
			{
				displayName: 'Run At',
				name: 'runAt',
				type: 'dateTime',
				default: '',
				description: 'Run no earlier than this time',
			},
			{
				displayName: 'Soft Timeout (Ms)',
				name: 'softTimeoutMs',
				type: 'number',
				typeOptions: { minValue: 1000, maxValue: 604_800_000 },
				default: 60_000,
				description:
					"After this long, in milliseconds, this job's handler is told to stop cleanly (SIGTERM, or a deadline header), before Timeout kills it; default: its queue's",
			},
			{
				displayName: 'Timeout (Ms)',
				name: 'timeoutMs',
				type: 'number',
				typeOptions: { minValue: 1000, maxValue: 604_800_000 },
				default: 600_000,
				description:
					"Hard limit of one run of this job, in milliseconds (1 s to 7 days): the handler is killed then; default: its queue's",
			},
		],
	},
];

export const jobIdField: INodeProperties = {
	displayName: 'Job ID',
	name: 'jobId',
	type: 'string',
	required: true,
	default: '',
	placeholder: '={{ $json.job_id }}',
	description: 'The job_id answered by Enqueue',
	displayOptions: { show: jobIdOps },
};

export const waitFields: INodeProperties[] = [
	{
		displayName: 'Timeout (Seconds)',
		name: 'timeout',
		type: 'number',
		typeOptions: { minValue: 1 },
		default: 300,
		description:
			'Give up waiting after this long. The gateway holds each request until the job finishes (at most 60 s per request), so the node answers as soon as it does, without polling.',
		displayOptions: { show: { resource: ['job'], operation: ['wait'] } },
	},
	{
		displayName: 'Options',
		name: 'waitOptions',
		type: 'collection',
		placeholder: 'Add Option',
		default: {},
		displayOptions: { show: { resource: ['job'], operation: ['wait'] } },
		options: [
			{
				displayName: 'Error If Job Failed',
				name: 'errorOnFailure',
				type: 'boolean',
				default: false,
				description:
					'Whether a job that ended failed or cancelled stops the workflow with its error, instead of being output',
			},
			{
				displayName: 'On Timeout',
				name: 'onTimeout',
				type: 'options',
				options: [
					{ name: 'Stop With an Error', value: 'error' },
					{
						name: 'Output the Job As It Is',
						value: 'output',
						description: 'With wait_timed_out set to true',
					},
				],
				default: 'error',
			},
		],
	},
];

export const queueFields: INodeProperties[] = [
	{
		displayName: 'Options',
		name: 'statsOptions',
		type: 'collection',
		placeholder: 'Add Option',
		default: {},
		displayOptions: { show: { resource: ['queue'], operation: ['getStats'] } },
		options: [
			{
				displayName: 'Queue',
				name: 'queue',
				type: 'string',
				default: '',
				description: 'Only this queue',
			},
		],
	},
	{
		displayName: 'Options',
		name: 'wakeOptions',
		type: 'collection',
		placeholder: 'Add Option',
		default: {},
		displayOptions: { show: { resource: ['queue'], operation: ['wakeWorkers'] } },
		options: [
			{
				displayName: 'Queue',
				name: 'queue',
				type: 'string',
				default: '',
				description: 'Only workers of this queue',
			},
			{
				displayName: 'Requested By',
				name: 'requestedBy',
				type: 'string',
				default: 'n8n',
				description: 'Logged by the gateway: who asked for the wake-up',
			},
			{
				displayName: 'Workers to Start',
				name: 'workersToStart',
				type: 'number',
				typeOptions: { minValue: 0 },
				default: 1,
				description:
					'Wake at most this many asleep workers; without this option, as many as the gateway allows (--max-wake). Never more than the jobs ready now; 0 only reports the counts.',
			},
		],
	},
];
