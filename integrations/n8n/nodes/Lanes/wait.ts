import type { IDataObject } from 'n8n-workflow';

import type { GatewayReply } from './transport';

/** Job statuses after which nothing changes any more (unless an operator retries). */
export const TERMINAL_STATUSES = ['completed', 'failed', 'cancelled'];

/** Longest `?wait=` asked of the gateway in one request, seconds. */
export const LONG_POLL_MAX_S = 30;

/** Shortest pause between two polls, ms: a zero interval must not hammer the gateway. */
const MIN_INTERVAL_MS = 100;

export interface WaitSettings {
	/** Give up after this long, ms. */
	timeoutMs: number;
	/** Pause between two polls when the gateway answers at once, ms. */
	intervalMs: number;
}

/** What waiting needs from the outside world (injected so it can be tested without n8n). */
export interface WaitIo {
	/** GET /api/jobs/{id}, with `?wait=<seconds>` unless `waitS` is null. */
	fetch(waitS: number | null): Promise<GatewayReply>;
	sleep(ms: number): Promise<void>;
	now(): number;
}

export type WaitOutcome =
	| { kind: 'done'; job: IDataObject }
	| { kind: 'timeout'; job: IDataObject }
	| { kind: 'error'; reply: GatewayReply };

export function isTerminal(job: IDataObject): boolean {
	return TERMINAL_STATUSES.includes(String(job.status));
}

/** True when the gateway refused the `wait` query parameter itself. */
function refusedWait(reply: GatewayReply): boolean {
	if (reply.status !== 400 && reply.status !== 422) return false;
	const error = (reply.body.error ?? {}) as IDataObject;
	return error.field === 'wait' || error.field === 'query';
}

/**
 * Waits until the job is completed, failed or cancelled, or the timeout passes.
 *
 * Each request asks the gateway to hold the answer until the job is finished
 * (`GET /api/jobs/{id}?wait=N`, N ≤ 30 s). A gateway that long-polls answers as soon as the job
 * is finished, or after N seconds, and the next request follows at once. A gateway without the
 * parameter ignores it and answers at once: an unfinished job answered sooner than half of N is
 * that case, and the next poll waits `intervalMs`. So the node polls today and switches to long
 * polling by itself, request by request, once the gateway supports it; a gateway that refuses
 * the parameter (400/422 naming `wait`) is asked without it from then on.
 */
export async function waitForJob(io: WaitIo, settings: WaitSettings): Promise<WaitOutcome> {
	const deadline = io.now() + settings.timeoutMs;
	let askWait = true;
	for (;;) {
		const remainingS = Math.floor((deadline - io.now()) / 1000);
		const waitS = askWait && remainingS >= 1 ? Math.min(LONG_POLL_MAX_S, remainingS) : null;
		const started = io.now();
		const reply = await io.fetch(waitS);
		if (waitS !== null && refusedWait(reply)) {
			askWait = false;
			continue;
		}
		if (reply.status < 200 || reply.status >= 300) return { kind: 'error', reply };
		const job = reply.body;
		if (isTerminal(job)) return { kind: 'done', job };
		const now = io.now();
		if (now >= deadline) return { kind: 'timeout', job };
		const held = waitS !== null && now - started >= (waitS * 1000) / 2;
		if (!held)
			await io.sleep(Math.min(Math.max(settings.intervalMs, MIN_INTERVAL_MS), deadline - now));
	}
}
