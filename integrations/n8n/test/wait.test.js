// Unit tests of Wait over the gateway's wait API (GET /api/jobs/{id}?wait=N), with a fake
// clock and a fake gateway.
const test = require('node:test');
const assert = require('node:assert/strict');

const { waitForJob, WAIT_MAX_S, EARLY_ANSWER_PAUSE_MS } = require('../dist/nodes/Lanes/wait');

/**
 * A fake gateway: `answers` are the job statuses it reports in turn (the last one repeats);
 * `holdMs(waitS)` is how long it holds an unfinished job's request asking `?wait=waitS`
 * (the real gateway: the whole wait; `finishAfterMs` ends the hold early, as the job finishing
 * does).
 */
function fakeGateway(answers, holdMs = (s) => s * 1000) {
	let t = 0;
	const calls = [];
	const io = {
		now: () => t,
		sleep: async (ms) => {
			calls.push({ sleep: ms });
			t += ms;
		},
		fetch: async (waitS) => {
			calls.push({ wait: waitS });
			const status = answers.length > 1 ? answers.shift() : answers[0];
			const terminal = ['completed', 'failed', 'cancelled'].includes(status);
			if (!terminal) t += holdMs(waitS);
			t += 5;
			return { status: 200, body: { job_id: 7, status } };
		},
	};
	return { io, calls };
}

const waits = (calls) => calls.filter((c) => c.wait !== undefined).map((c) => c.wait);

test('every request asks the gateway to wait, and the next follows at once', async () => {
	const { io, calls } = fakeGateway(['pending', 'processing', 'completed']);
	const out = await waitForJob(io, { timeoutMs: 300_000 });
	assert.equal(out.kind, 'done');
	assert.equal(out.job.status, 'completed');
	assert.ok(
		calls.every((c) => c.sleep === undefined),
		JSON.stringify(calls),
	);
	assert.deepEqual(waits(calls), [WAIT_MAX_S, WAIT_MAX_S, WAIT_MAX_S]);
});

test('a finished job is returned from the first answer', async () => {
	const { io, calls } = fakeGateway(['failed']);
	const out = await waitForJob(io, { timeoutMs: 10_000 });
	assert.deepEqual([out.kind, out.job.status, calls.length], ['done', 'failed', 1]);
	assert.deepEqual(waits(calls), [10]);
});

test('the timeout ends the wait with the job as it is; no wait asks past it', async () => {
	const { io, calls } = fakeGateway(['processing']);
	const out = await waitForJob(io, { timeoutMs: 150_000 });
	assert.equal(out.kind, 'timeout');
	assert.equal(out.job.status, 'processing');
	// 60 s, 60 s, the 29 whole seconds left, then one last look.
	assert.deepEqual(waits(calls), [60, 60, 29, 0]);
	assert.ok(io.now() < 151_000, `${io.now()}`);
});

test('a gateway that answers at once is asked again after a pause, never in a tight loop', async () => {
	const { io, calls } = fakeGateway(['pending', 'pending', 'completed'], () => 0);
	const out = await waitForJob(io, { timeoutMs: 60_000 });
	assert.equal(out.kind, 'done');
	assert.deepEqual(
		calls.map((c) => Object.keys(c)[0]),
		['wait', 'sleep', 'wait', 'sleep', 'wait'],
	);
	assert.equal(calls[1].sleep, EARLY_ANSWER_PAUSE_MS);
});

test('a gateway error ends the wait', async () => {
	const io = {
		now: () => 0,
		sleep: async () => {},
		fetch: async () => ({
			status: 404,
			body: { error: { code: 'not_found', message: 'job 7 does not exist' } },
		}),
	};
	const out = await waitForJob(io, { timeoutMs: 60_000 });
	assert.equal(out.kind, 'error');
	assert.equal(out.reply.status, 404);
});
