import type {
	IDataObject,
	IExecuteFunctions,
	IHttpRequestMethods,
	IHttpRequestOptions,
	IN8nHttpFullResponse,
	JsonObject,
} from 'n8n-workflow';
import { NodeApiError } from 'n8n-workflow';

/** The gateway's error body: `{"error": {"code", "message", "field"?}}`. */
export interface GatewayError {
	status: number;
	code: string;
	message: string;
	field?: string;
}

/** One answer of the gateway: its status and JSON body. */
export interface GatewayReply {
	status: number;
	body: IDataObject;
}

/** The gateway's base URL from the credential, without a trailing slash. */
export async function gatewayUrl(ctx: IExecuteFunctions): Promise<string> {
	const credentials = await ctx.getCredentials('lanesApi');
	return String(credentials.url ?? '')
		.trim()
		.replace(/\/+$/, '');
}

/** The error a gateway answer carries, or null for a 2xx. */
export function gatewayError(reply: GatewayReply): GatewayError | null {
	if (reply.status >= 200 && reply.status < 300) return null;
	const error = (reply.body?.error ?? {}) as IDataObject;
	const detail: GatewayError = {
		status: reply.status,
		code: typeof error.code === 'string' ? error.code : `http_${reply.status}`,
		message:
			typeof error.message === 'string' && error.message !== ''
				? error.message
				: `the Lanes gateway answered HTTP ${reply.status}`,
	};
	if (typeof error.field === 'string' && error.field !== '') detail.field = error.field;
	return detail;
}

/** An n8n node error carrying the gateway's message, field, code and HTTP status. */
export function toNodeError(
	ctx: IExecuteFunctions,
	error: GatewayError,
	itemIndex: number,
): NodeApiError {
	const message = error.field ? `${error.message} (field: ${error.field})` : error.message;
	const body: JsonObject = { error: { ...error } };
	const nodeError = new NodeApiError(ctx.getNode(), body, {
		message,
		description: `The Lanes gateway answered HTTP ${error.status} ${error.code}${
			error.field ? ` for the field "${error.field}"` : ''
		}.`,
		httpCode: String(error.status),
		itemIndex,
	});
	// n8n rewrites messages that mention an errno name (EPERM, ENOENT…) into generic text: the
	// gateway's own words are what the user needs.
	nodeError.message = message;
	nodeError.context.gateway = { ...error };
	return nodeError;
}

function bodyOf(raw: unknown): IDataObject {
	if (raw && typeof raw === 'object' && !Array.isArray(raw)) return raw as IDataObject;
	if (typeof raw === 'string' && raw !== '') {
		try {
			const parsed = JSON.parse(raw) as unknown;
			if (parsed && typeof parsed === 'object' && !Array.isArray(parsed)) {
				return parsed as IDataObject;
			}
		} catch {
			// Not JSON (a proxy's HTML error page): keep the text for the error message.
		}
		return { error: { message: raw.slice(0, 500) } };
	}
	return {};
}

/**
 * Calls the gateway with the credential's key. Every HTTP status comes back as a reply (the
 * caller decides what an error is); only a failure to reach the gateway throws.
 */
export async function gatewayRequest(
	ctx: IExecuteFunctions,
	method: IHttpRequestMethods,
	path: string,
	itemIndex: number,
	options: { body?: IDataObject; qs?: IDataObject; timeoutMs?: number } = {},
): Promise<GatewayReply> {
	const request: IHttpRequestOptions = {
		method,
		url: `${await gatewayUrl(ctx)}${path}`,
		json: true,
		returnFullResponse: true,
		ignoreHttpStatusErrors: true,
		disableFollowRedirect: true,
		timeout: options.timeoutMs ?? 30_000,
	};
	if (options.body !== undefined) request.body = options.body;
	if (options.qs !== undefined) request.qs = options.qs;
	let response: IN8nHttpFullResponse;
	try {
		response = (await ctx.helpers.httpRequestWithAuthentication.call(
			ctx,
			'lanesApi',
			request,
		)) as IN8nHttpFullResponse;
	} catch (error) {
		throw new NodeApiError(ctx.getNode(), error as JsonObject, {
			message: `Could not reach the Lanes gateway at ${request.url}: ${(error as Error).message}`,
			itemIndex,
		});
	}
	return { status: response.statusCode, body: bodyOf(response.body) };
}

/** Like `gatewayRequest`, but a non-2xx answer throws the gateway's error as a node error. */
export async function gatewayCall(
	ctx: IExecuteFunctions,
	method: IHttpRequestMethods,
	path: string,
	itemIndex: number,
	options: { body?: IDataObject; qs?: IDataObject; timeoutMs?: number } = {},
): Promise<IDataObject> {
	const reply = await gatewayRequest(ctx, method, path, itemIndex, options);
	const error = gatewayError(reply);
	if (error) throw toNodeError(ctx, error, itemIndex);
	return reply.body;
}
