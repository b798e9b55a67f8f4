// Fault injection in the Fal.ai simulator: every fault kind, every endpoint
// class, and the triggers (count, every_nth, skip, seeded probability).
'use strict';
const test = require('node:test');
const assert = require('node:assert/strict');
const path = require('path');
const { execFileSync } = require('child_process');
const C = require('../common');

const FAL = path.join(__dirname, '..', 'fal_sim.js');
const KEY = { authorization: 'Key kid:secret' };
const V26 = '/queue/fal-ai/kling-video/v2.6/pro/image-to-video';
const PNG = execFileSync('ffmpeg', ['-v', 'error', '-f', 'lavfi', '-i', 'color=c=gray:s=64x36', '-frames:v', '1', '-f', 'image2pipe', '-c:v', 'png', '-']);
const INPUT = { prompt: 'p', start_image_url: `data:image/png;base64,${PNG.toString('base64')}`, duration: '5', generate_audio: false };
let sim, base;

const config = (knobs) => C.request('POST', `${base}/_sim/config`, { body: knobs });
const faults = (cls, list) => config({ faults: { [cls]: list } });
const submit = (opts = {}) => C.request('POST', base + V26, Object.assign({ headers: KEY, body: INPUT }, opts));
const ledger = async () => (await C.request('GET', `${base}/_sim/ledger`)).json;

test.before(async () => { sim = await C.spawnSim(FAL, ['--video-size', 'small', '--key', 'kid:secret', '--mode', 'deterministic', '--seed', '42']); base = sim.base; });
test.after(() => sim.stop());
test.beforeEach(() => C.request('POST', `${base}/_sim/reset`));

test('429 with and without Retry-After; nothing is billed', async () => {
	await faults('submit', [{ status: 429, retry_after: 3, count: 1 }, { status: 429, count: 1 }]);
	let r = await submit();
	assert.equal(r.status, 429);
	assert.equal(r.headers['retry-after'], '3');
	assert.ok(r.json.detail && r.json.error_type);
	r = await submit();
	assert.equal(r.status, 429);
	assert.equal(r.headers['retry-after'], undefined);
	r = await submit();
	assert.equal(r.status, 200, 'the faults were one-shot');
	assert.equal((await ledger()).length, 1);
});

test('500, 503 with Fal\'s flat body and X-Fal-Error-Type; 504 carries X-Fal-Request-Timeout-Type: user', async () => {
	await faults('status', [{ status: 500, count: 1 }, { status: 503, count: 1 }, { status: 504, count: 1 }]);
	const id = (await submit()).json.request_id;
	const url = `${base}/queue/fal-ai/kling-video/requests/${id}/status`;
	let r = await C.request('GET', url, { headers: KEY });
	assert.equal(r.status, 500);
	assert.equal(r.json.error_type, r.headers['x-fal-error-type']);
	assert.ok(r.headers['x-fal-request-id']);
	r = await C.request('GET', url, { headers: KEY });
	assert.equal(r.status, 503);
	assert.equal(r.json.error_type, 'runner_scheduling_failure');
	r = await C.request('GET', url, { headers: KEY });
	assert.equal(r.status, 504);
	assert.equal(r.headers['x-fal-request-timeout-type'], 'user');
	assert.equal((await C.request('GET', url, { headers: KEY })).status, 202);
});

test('502 is nginx HTML without x-fal-request-id (an ingress error)', async () => {
	await faults('result', [{ status: 502 }]);
	const r = await C.request('GET', `${base}/queue/fal-ai/kling-video/requests/x`, { headers: KEY });
	assert.equal(r.status, 502);
	assert.match(r.headers['content-type'], /text\/html/);
	assert.match(r.text, /nginx/);
	assert.equal(r.headers['x-fal-request-id'], undefined);
});

test('reset before the answer: the client sees a reset and no job exists', async () => {
	await faults('submit', [{ drop: true, count: 1 }]);
	const r = await submit();
	assert.ok(['ECONNRESET', 'ABORTED', 'EPIPE'].includes(r.error), JSON.stringify(r));
	assert.equal((await ledger()).length, 0);
	const log = (await C.request('GET', `${base}/_sim/requests`)).json;
	assert.equal(log[0].fault, 'reset');
	assert.equal(log[0].status, 0);
});

test('accept_then_drop: the job exists and is billed, but the client gets no answer (the duplicate-submit trap)', async () => {
	await faults('submit', [{ accept_then_drop: true, count: 1 }]);
	const r = await submit();
	assert.ok(r.error, 'no answer');
	const l = await ledger();
	assert.equal(l.length, 1);
	assert.equal(l[0].billed, true);
	const jobs = (await C.request('GET', `${base}/_sim/jobs`)).json;
	assert.equal(jobs[0].request_id, l[0].request_id);
	await submit();
	const sum = (await C.request('GET', `${base}/_sim/ledger?summary=1`)).json;
	assert.equal(sum.duplicate_inputs[0].submits, 2, 'a blind resubmit is paid twice');
});

test('stall: the answer never comes within the client timeout; respond_after_stall answers late', async () => {
	await faults('status', [{ stall_s: 1, count: 1 }, { stall_s: 0.3, respond_after_stall: true, after_accept: true, count: 1 }]);
	const url = `${base}/queue/fal-ai/kling-video/requests/${(await submit()).json.request_id}/status`;
	const t0 = Date.now();
	let r = await C.request('GET', url, { headers: KEY, timeoutMs: 300 });
	assert.equal(r.error, 'TIMEOUT');
	assert.ok(Date.now() - t0 >= 290);
	const t1 = Date.now();
	r = await C.request('GET', url, { headers: KEY });
	assert.equal(r.status, 202);
	assert.ok(Date.now() - t1 >= 290);
});

test('malformed JSON and a truncated body (Content-Length larger than what is sent)', async () => {
	await faults('status', [{ malformed: true, count: 1 }, { truncated: true, count: 1 }, { malformed: true, after_accept: true, count: 1 }]);
	const url = `${base}/queue/fal-ai/kling-video/requests/${(await submit()).json.request_id}/status`;
	let r = await C.request('GET', url, { headers: KEY });
	assert.equal(r.status, 200);
	assert.equal(r.json, undefined, 'not JSON');
	assert.match(r.headers['content-type'], /json/);
	r = await C.request('GET', url, { headers: KEY });
	assert.ok(r.error, 'the body ended early');
	assert.ok(r.partial.length < Number(r.headers['content-length']));
	r = await C.request('GET', url, { headers: KEY });
	assert.equal(r.status, 202, 'after_accept keeps the real status');
	assert.equal(r.json, undefined);
	assert.match(r.text, /IN_PROGRESS/);
});

test('faults on cancel, initiate, upload and cdn (a truncated media file)', async () => {
	await config({ faults: { cancel: [{ status: 503, count: 1 }], initiate: [{ status: 500, count: 1 }], upload: [{ status: 503, count: 1 }], cdn: [{ truncated: true, count: 1 }] } });
	const s = (await submit()).json;
	assert.equal((await C.request('PUT', s.cancel_url, { headers: KEY })).status, 503);
	assert.equal((await C.request('POST', `${base}/rest/storage/upload/initiate`, { headers: KEY, body: { content_type: 'image/png' } })).status, 500);
	const up = (await C.request('POST', `${base}/rest/storage/upload/initiate`, { headers: KEY, body: { content_type: 'image/png', file_name: 'a.png' } })).json;
	const bytes = Buffer.alloc(4000, 7);
	assert.equal((await C.request('PUT', up.upload_url, { body: bytes })).status, 503);
	assert.equal((await C.request('PUT', up.upload_url, { body: bytes })).status, 200, 'the failed PUT did not use the token');
	const g = await C.request('GET', up.file_url);
	assert.ok(g.error);
	assert.equal(Number(g.headers['content-length']), 4000);
	assert.ok(g.partial.length < 4000);
	assert.ok((await C.request('GET', up.file_url)).body.equals(bytes));
});

test('failed jobs at completion: 422 content_policy_violation, 503 runner_disconnected; detail as a string', async () => {
	await config({ fail_jobs: 1, polls_before_completed: 0 });
	let s = (await submit()).json;
	let st = (await C.request('GET', s.status_url, { headers: KEY })).json;
	assert.equal(st.status, 'COMPLETED');
	assert.equal(st.error_type, 'content_policy_violation');
	let r = await C.request('GET', s.response_url, { headers: KEY });
	assert.equal(r.status, 422);
	assert.equal(r.json.detail[0].type, 'content_policy_violation');
	assert.match(r.json.detail[0].msg, /content policy/);

	await config({ fail_jobs: 1, fail_error_type: 'runner_disconnected', polls_before_completed: 0 });
	s = (await submit()).json;
	st = (await C.request('GET', s.status_url, { headers: KEY })).json;
	assert.equal(st.error_type, 'runner_disconnected');
	r = await C.request('GET', s.response_url, { headers: KEY });
	assert.equal(r.status, 503);
	assert.equal(r.headers['x-fal-error-type'], 'runner_disconnected');
	assert.deepEqual(r.json, { detail: 'Runner disconnected', error_type: 'runner_disconnected' });
	assert.equal((await ledger())[1].billed, false, '5xx failures are not billed');

	await config({ fail_jobs: 1, fail_error_type: 'content_policy_violation', detail_string: true, polls_before_completed: 0 });
	s = (await submit()).json;
	await C.request('GET', s.status_url, { headers: KEY });
	r = await C.request('GET', s.response_url, { headers: KEY });
	assert.equal(r.status, 422);
	assert.equal(typeof r.json.detail, 'string');
});

test('triggers: every_nth, skip, and probability reproducible with --seed', async () => {
	await faults('status', [{ status: 500, every_nth: 3 }]);
	const url = `${base}/queue/fal-ai/kling-video/requests/none/status`;
	const codes = [];
	for (let i = 0; i < 6; i++) codes.push((await C.request('GET', url, { headers: KEY })).status);
	assert.deepEqual(codes, [404, 404, 500, 404, 404, 500]);
	await faults('status', [{ status: 500, skip: 2, count: 1 }]);
	codes.length = 0;
	for (let i = 0; i < 4; i++) codes.push((await C.request('GET', url, { headers: KEY })).status);
	assert.deepEqual(codes, [404, 404, 500, 404]);
	// The same seed gives the same dice: after a reset, and in a second simulator.
	const roll = async (b) => {
		await C.request('POST', `${b}/_sim/reset`);
		await C.request('POST', `${b}/_sim/config`, { body: { faults: { status: [{ status: 503, p: 0.5 }] } } });
		const out = [];
		for (let i = 0; i < 24; i++) out.push((await C.request('GET', `${b}/queue/fal-ai/kling-video/requests/none/status`, { headers: KEY })).status);
		return out.join(',');
	};
	const first = await roll(base);
	assert.equal(await roll(base), first);
	assert.match(first, /503/);
	assert.match(first, /404/);
	const other = await C.spawnSim(FAL, ['--video-size', 'small', '--key', 'kid:secret', '--seed', '42']);
	try { assert.equal(await roll(other.base), first); } finally { await other.stop(); }
	const fired = (await C.request('GET', `${base}/_sim/faults`)).json.fired;
	assert.ok(fired.status > 0);
});
