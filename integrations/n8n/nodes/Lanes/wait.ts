import type { IDataObject } from 'n8n-workflow';

import type { GatewayReply } from './transport';

/** Job statuses after which nothing changes any more (unless an operator retries). */
export const TERMINAL_STATUSES = ['completed', 'failed', 'cancelled'];

/** Longest `?wait=` the gateway accepts in one request, seconds. */
export const WAIT_MAX_S = 60;

/**
 * Pause before asking again when an unfinished job is answered well before its wait is over
 * (a gateway too old to hold requests, or one restarting), ms: never a tight loop.
 */
export const EARLY_ANSWER_PAUSE_MS = 1000;

export interface WaitSettings {
	/** Give up after this long, ms. */
	timeoutMs: number;
}

/** What waiting needs from the outside world (injected so it can be tested without n8n). */
export interface WaitIo {
	/** GET /api/jobs/{id}?wait=<waitS>. */
	fetch(waitS: number): Promise<GatewayReply>;
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

/**
 * Waits until the job is completed, failed or cancelled, or the timeout passes, with the
 * gateway's wait API: `GET /api/jobs/{id}?wait=N` (N ≤ 60 s, never past the timeout) answers
 * as soon as the job is finished, or after N seconds with the job as it is; the next request
 * follows at once. No polling: the gateway is told when the job finishes. When less than a
 * second is left, one last `?wait=0` look decides between done and timeout.
 */
export async function waitForJob(io: WaitIo, settings: WaitSettings): Promise<WaitOutcome> {
	const deadline = io.now() + settings.timeoutMs;
	for (;;) {
		const leftS = Math.floor((deadline - io.now()) / 1000);
		const waitS = Math.max(0, Math.min(WAIT_MAX_S, leftS));
		const started = io.now();
		const reply = await io.fetch(waitS);
		if (reply.status < 200 || reply.status >= 300) return { kind: 'error', reply };
		const job = reply.body;
		if (isTerminal(job)) return { kind: 'done', job };
		const now = io.now();
		if (waitS === 0 || now >= deadline) return { kind: 'timeout', job };
		if (now - started < (waitS * 1000) / 2)
			await io.sleep(Math.min(EARLY_ANSWER_PAUSE_MS, deadline - now));
	}
}
