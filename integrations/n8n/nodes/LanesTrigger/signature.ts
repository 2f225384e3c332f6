import { createHmac, timingSafeEqual } from 'crypto';

/** Deliveries signed more than this far from now (either way) are refused, seconds. */
export const TOLERANCE_S = 5 * 60;

export interface WebhookHeaders {
	'webhook-id'?: string | string[];
	'webhook-timestamp'?: string | string[];
	'webhook-signature'?: string | string[];
}

/** The signing keys of `whsec_<base64>` secrets, separated by spaces, commas or new lines. */
export function signingKeys(secrets: string): Buffer[] {
	return secrets
		.split(/[\s,]+/)
		.filter((s) => s !== '')
		.map((secret) => {
			if (!secret.startsWith('whsec_')) {
				throw new Error('The webhook secret must look like whsec_<base64>');
			}
			const key = Buffer.from(secret.slice('whsec_'.length), 'base64');
			if (key.length === 0) throw new Error('The webhook secret after whsec_ is empty');
			return key;
		});
}

function header(headers: WebhookHeaders, name: keyof WebhookHeaders): string {
	const value = headers[name];
	return Array.isArray(value) ? (value[0] ?? '') : (value ?? '');
}

/**
 * Checks a Standard Webhooks signature as Lanes' coordinator makes it:
 * `webhook-signature: v1,<base64 HMAC-SHA256(key, "<webhook-id>.<webhook-timestamp>.<raw body>")>`,
 * possibly several space-separated signatures. Returns null when the request is authentic, else
 * why not. `raw` must be the exact bytes received: a re-serialised body does not match.
 */
export function verifySignature(
	keys: Buffer[],
	headers: WebhookHeaders,
	raw: Buffer,
	nowS: number,
): string | null {
	const id = header(headers, 'webhook-id');
	const timestamp = header(headers, 'webhook-timestamp');
	const signatures = header(headers, 'webhook-signature');
	if (id === '' || timestamp === '' || signatures === '') {
		return 'missing webhook-id, webhook-timestamp or webhook-signature header';
	}
	if (!/^[0-9]{1,12}$/.test(timestamp) || Math.abs(nowS - Number(timestamp)) > TOLERANCE_S) {
		return 'webhook-timestamp is more than 5 minutes away from now';
	}
	for (const key of keys) {
		const expected = createHmac('sha256', key).update(`${id}.${timestamp}.`).update(raw).digest();
		for (const part of signatures.split(' ')) {
			const comma = part.indexOf(',');
			if (comma < 0 || part.slice(0, comma) !== 'v1') continue;
			const given = Buffer.from(part.slice(comma + 1), 'base64');
			// Constant time: the comparison must not reveal how much of a guess was right.
			if (given.length === expected.length && timingSafeEqual(given, expected)) return null;
		}
	}
	return 'bad signature';
}
