// Unit tests of the Lanes Trigger's signature check and event filter, run with `node --test`
// against the built package (npm run build first).
const test = require('node:test');
const assert = require('node:assert/strict');
const { createHmac } = require('node:crypto');

const { signingKeys, verifySignature } = require('../dist/nodes/LanesTrigger/signature');
const { eventItem, eventSelected, eventType } = require('../dist/nodes/LanesTrigger/events');

const KEY = Buffer.from('lanes-n8n-unit-test-key-0123456789');
const SECRET = `whsec_${KEY.toString('base64')}`;

function sign(key, id, ts, body) {
	const mac = createHmac('sha256', key).update(`${id}.${ts}.`).update(body).digest('base64');
	return `v1,${mac}`;
}

function headers(id, ts, signature) {
	return { 'webhook-id': id, 'webhook-timestamp': String(ts), 'webhook-signature': signature };
}

const body = Buffer.from('{"job_id":17,"status":"completed","queue":"invoices","lane":"resto-42"}');
const now = 1_800_000_000;

test('a correctly signed body is accepted', () => {
	const h = headers('msg_1', now, sign(KEY, 'msg_1', now, body));
	assert.equal(verifySignature(signingKeys(SECRET), h, body, now), null);
});

test('any of several signatures and any of several secrets may match (rotation)', () => {
	const other = Buffer.from('another key');
	const h = headers('msg_1', now, `v1,bm9wZQ== ${sign(KEY, 'msg_1', now, body)}`);
	assert.equal(verifySignature(signingKeys(SECRET), h, body, now), null);
	const keys = signingKeys(`whsec_${other.toString('base64')} ${SECRET}`);
	assert.equal(keys.length, 2);
	assert.equal(verifySignature(keys, h, body, now), null);
});

test('a tampered body, a wrong key or a changed id is refused', () => {
	const h = headers('msg_1', now, sign(KEY, 'msg_1', now, body));
	const tampered = Buffer.concat([body, Buffer.from(' ')]);
	assert.equal(verifySignature(signingKeys(SECRET), h, tampered, now), 'bad signature');
	const wrong = signingKeys(`whsec_${Buffer.from('wrong').toString('base64')}`);
	assert.equal(verifySignature(wrong, h, body, now), 'bad signature');
	const otherId = { ...h, 'webhook-id': 'msg_2' };
	assert.equal(verifySignature(signingKeys(SECRET), otherId, body, now), 'bad signature');
	const v2 = headers('msg_1', now, sign(KEY, 'msg_1', now, body).replace('v1,', 'v2,'));
	assert.equal(verifySignature(signingKeys(SECRET), v2, body, now), 'bad signature');
});

test('timestamps more than 5 minutes away are refused, either way', () => {
	for (const ts of [now - 301, now + 301]) {
		const h = headers('msg_1', ts, sign(KEY, 'msg_1', ts, body));
		assert.match(verifySignature(signingKeys(SECRET), h, body, now), /5 minutes/);
	}
	const h = headers('msg_1', now - 299, sign(KEY, 'msg_1', now - 299, body));
	assert.equal(verifySignature(signingKeys(SECRET), h, body, now), null);
});

test('missing headers are refused', () => {
	assert.match(verifySignature(signingKeys(SECRET), { 'webhook-id': 'msg_1' }, body, now), /missing/);
});

test('secrets must be whsec_<base64>', () => {
	assert.throws(() => signingKeys('not-a-secret'), /whsec_/);
	assert.throws(() => signingKeys('whsec_'), /empty/);
	assert.deepEqual(signingKeys('  '), []);
});

test('event types: global events name theirs, callbacks are named by status', () => {
	assert.equal(eventType({ type: 'agent.awake' }), 'agent.awake');
	assert.equal(eventType({ job_id: 1, status: 'completed' }), 'job.completed');
	assert.equal(eventType({ job_id: 1, status: 'failed' }), 'job.failed');
	assert.ok(eventSelected('agent.asleep', ['agent.*']));
	assert.ok(eventSelected('watchdog.cleared', ['job.failed', 'watchdog.*']));
	assert.ok(eventSelected('events.summary', ['*']));
	assert.ok(!eventSelected('job.failed', ['job.completed']));
	assert.ok(!eventSelected('agent.awake', ['watchdog.*', 'lane.blocked']));
});

test('the output item keeps the event and adds its type, id and a message', () => {
	const item = eventItem({ job_id: 17, status: 'completed', queue: 'invoices', lane: 'resto-42' }, 'msg_9');
	assert.equal(item.event_type, 'job.completed');
	assert.equal(item.webhook_id, 'msg_9');
	assert.equal(item.message, '✅ Job 17 completed (invoices / resto-42)');
	const failed = eventItem({ job_id: 18, status: 'failed', queue: 'invoices', error: 'PDF parse error' }, 'msg_10');
	assert.equal(failed.message, '❌ Job 18 failed (invoices): PDF parse error');
	const global = eventItem({ type: 'agent.awake', message: '🟢 Worker w awake' }, 'msg_11');
	assert.equal(global.message, '🟢 Worker w awake');
});
