import type {
	IAuthenticateGeneric,
	Icon,
	ICredentialTestRequest,
	ICredentialType,
	INodeProperties,
} from 'n8n-workflow';

/**
 * The Lanes gateway's address and API key (sent as `X-API-Key`), and the coordinator's webhook
 * secret, which the Lanes Trigger node uses to verify the signature of each delivery.
 */
export class LanesApi implements ICredentialType {
	name = 'lanesApi';

	displayName = 'Lanes API';

	icon: Icon = { light: 'file:../icons/lanes.svg', dark: 'file:../icons/lanes.dark.svg' };

	// How to install a community package; this package's README (shipped with it) describes
	// the fields below.
	documentationUrl = 'https://docs.n8n.io/integrations/community-nodes/installation/';

	properties: INodeProperties[] = [
		{
			displayName: 'Gateway URL',
			name: 'url',
			type: 'string',
			default: '',
			placeholder: 'http://lanes-gateway:8080',
			required: true,
			description: 'Base URL of the Lanes gateway, without /api',
		},
		{
			displayName: 'API Key',
			name: 'apiKey',
			type: 'string',
			typeOptions: { password: true },
			default: '',
			description:
				'A key of the gateway (LANES_API_KEYS) holding the enqueue and read roles. Leave empty only for a gateway without keys.',
		},
		{
			displayName: 'Webhook Secret',
			name: 'webhookSecret',
			type: 'string',
			typeOptions: { password: true },
			default: '',
			placeholder: 'whsec_...',
			description:
				"The coordinator's LANES_WEBHOOK_SECRET (or the endpoint's own secret), used by the Lanes Trigger node to verify deliveries. Several secrets separated by spaces are all accepted (for a rotation).",
		},
	];

	authenticate: IAuthenticateGeneric = {
		type: 'generic',
		properties: {
			headers: {
				'X-API-Key': '={{$credentials.apiKey}}',
			},
		},
	};

	// An authenticated read: a wrong key answers 401, a key without the read role 403.
	test: ICredentialTestRequest = {
		request: {
			baseURL: '={{$credentials.url.replace(/\\/+$/, "")}}',
			url: '/api/queue/stats',
			method: 'GET',
		},
	};
}
