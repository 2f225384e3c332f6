// Unit tests of Wait's polling and long-polling, with a fake clock and a fake gateway.
const test = require('node:test');
const assert = require('node:assert/strict');

const { waitForJob } = require('../dist/nodes/Lanes/wait');

/** A fake gateway: `answers` are the job statuses it reports in turn; `holdMs(waitS)` is how
 * long it holds a request asking `?wait=waitS` (0: the parameter is ignored). */
function fakeGateway(answers, holdMs, refuseWait = false) {
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
			if (refuseWait && waitS !== null) {
				return { status: 422, body: { error: { code: 'invalid_field', message: 'no', field: 'wait' } } };
			}
			const status = answers.length > 1 ? answers.shift() : answers[0];
			const terminal = ['completed', 'failed', 'cancelled'].includes(status);
			if (!terminal && waitS !== null) t += holdMs(waitS);
			t += 5;
			return { status: 200, body: { job_id: 7, status } };
		},
	};
	return { io, calls };
}

test('without long-poll support it polls at the interval and returns the finished job', async () => {
	const { io, calls } = fakeGateway(['pending', 'processing', 'completed'], () => 0);
	const out = await waitForJob(io, { timeoutMs: 60_000, intervalMs: 2000 });
	assert.equal(out.kind, 'done');
	assert.equal(out.job.status, 'completed');
	assert.deepEqual(
		calls.map((c) => Object.keys(c)[0]),
		['wait', 'sleep', 'wait', 'sleep', 'wait'],
	);
	assert.equal(calls[1].sleep, 2000);
	assert.equal(calls[0].wait, 30);
});

test('with long-poll support it asks again at once, without sleeping', async () => {
	const { io, calls } = fakeGateway(['pending', 'pending', 'completed'], (s) => s * 1000);
	const out = await waitForJob(io, { timeoutMs: 300_000, intervalMs: 2000 });
	assert.equal(out.kind, 'done');
	assert.ok(calls.every((c) => c.sleep === undefined), JSON.stringify(calls));
	assert.equal(calls.length, 3);
});

test('a finished job is returned from the first answer', async () => {
	const { io, calls } = fakeGateway(['failed'], () => 0);
	const out = await waitForJob(io, { timeoutMs: 1000, intervalMs: 2000 });
	assert.deepEqual([out.kind, out.job.status, calls.length], ['done', 'failed', 1]);
});

test('the timeout ends the wait with the job as it is; the wait never asks past it', async () => {
	const { io, calls } = fakeGateway(['processing'], (s) => s * 1000);
	const out = await waitForJob(io, { timeoutMs: 45_000, intervalMs: 2000 });
	assert.equal(out.kind, 'timeout');
	assert.equal(out.job.status, 'processing');
	// 30 s, then the 14 whole seconds left; the last second is polled without ?wait=.
	const waits = calls.filter((c) => c.wait !== undefined).map((c) => c.wait);
	assert.deepEqual(waits.slice(0, 2), [30, 14]);
	assert.ok(waits.slice(2).every((w) => w === null), JSON.stringify(waits));
});

test('a gateway refusing ?wait= is polled without it', async () => {
	const { io, calls } = fakeGateway(['pending', 'completed'], () => 0, true);
	const out = await waitForJob(io, { timeoutMs: 60_000, intervalMs: 1000 });
	assert.equal(out.kind, 'done');
	assert.deepEqual(
		calls.filter((c) => c.wait !== undefined).map((c) => c.wait),
		[30, null, null],
	);
});

test('a gateway error ends the wait', async () => {
	const io = {
		now: () => 0,
		sleep: async () => {},
		fetch: async () => ({ status: 404, body: { error: { code: 'not_found', message: 'job 7 does not exist' } } }),
	};
	const out = await waitForJob(io, { timeoutMs: 60_000, intervalMs: 1000 });
	assert.equal(out.kind, 'error');
	assert.equal(out.reply.status, 404);
});
