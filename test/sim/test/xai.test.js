// The xAI simulator's contract over real HTTP (specs/xai.md section 10).
'use strict';
const test = require('node:test');
const assert = require('node:assert/strict');
const path = require('path');
const fs = require('fs');
const os = require('os');
const http = require('http');
const { execFileSync } = require('child_process');
const C = require('../common');

const XAI = path.join(__dirname, '..', 'xai_sim.js');
const AUTH = { authorization: 'Bearer xai-secret-token' };
const JPG = execFileSync('ffmpeg', ['-v', 'error', '-f', 'lavfi', '-i', 'color=c=navy:s=300x400', '-frames:v', '1', '-f', 'image2pipe', '-c:v', 'mjpeg', '-']);
const IMAGE = `data:image/jpeg;base64,${JPG.toString('base64')}`;
const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'xai-test-'));
let sim, base;

const gen = (body, headers = AUTH) => C.request('POST', `${base}/v1/videos/generations`, { headers, body });
const poll = (id) => C.request('GET', `${base}/v1/videos/${id}`, { headers: AUTH });
const config = (knobs) => C.request('POST', `${base}/_sim/config`, { body: knobs });
const BODY = { model: 'grok-imagine-video', prompt: 'a calm living room', image: { url: IMAGE }, duration: 5, aspect_ratio: '16:9', resolution: '720p' };

// Polls until the answer is no longer a 202; returns [list of codes, last answer].
async function untilDone(id) {
	const codes = [];
	for (let i = 0; i < 400; i++) {
		const r = await poll(id);
		codes.push(r.status);
		if (r.status !== 202) return [codes, r];
		await new Promise((res) => setTimeout(res, 15));
	}
	throw new Error('never done');
}

test.before(async () => { sim = await C.spawnSim(XAI, ['--video-size', 'small', '--key', 'xai-secret-token', '--seed', '3']); base = sim.base; });
test.after(async () => { await sim.stop(); fs.rmSync(tmp, { recursive: true, force: true }); });
test.beforeEach(() => C.request('POST', `${base}/_sim/reset`));

test('auth: a missing or wrong bearer token is a 400 invalid-argument with the key masked', async () => {
	let r = await gen(BODY, {});
	assert.equal(r.status, 400);
	assert.equal(r.json.code, 'invalid-argument');
	r = await gen(BODY, { authorization: 'Bearer abcdefgh' });
	assert.equal(r.status, 400);
	assert.match(r.json.error, /^Incorrect API key provided: ab\*\*\*gh\. You can obtain an API key from https:\/\/console\.x\.ai\.$/);
	r = await C.request('GET', `${base}/v1/videos/whatever`, { headers: {} });
	assert.equal(r.status, 400);
	await config({ auth_error_status: 401 });
	assert.equal((await gen(BODY, {})).status, 401);
});

test('submit: 200 {request_id}; the poll goes 202 pending with rising progress, then 200 done', async () => {
	await config({ processing_s: 0.3 });
	const r = await gen(BODY);
	assert.equal(r.status, 200);
	assert.deepEqual(Object.keys(r.json), ['request_id']);
	assert.match(r.json.request_id, /^[0-9a-f-]{36}$/);
	const progress = [];
	let last;
	for (let i = 0; i < 200; i++) {
		last = await poll(r.json.request_id);
		if (last.status !== 202) break;
		assert.equal(last.json.status, 'pending');
		progress.push(last.json.progress);
		await new Promise((res) => setTimeout(res, 20));
	}
	assert.ok(progress.length >= 2);
	assert.deepEqual([...progress].sort((a, b) => a - b), progress, 'progress never goes back');
	assert.ok(progress.every((p) => p >= 0 && p <= 99));
	assert.equal(last.status, 200);
	const b = last.json;
	assert.equal(b.status, 'done');
	assert.equal(b.model, 'grok-imagine-video');
	assert.equal(b.progress, 100);
	assert.equal(b.video.duration, 5);
	assert.equal(b.video.respect_moderation, true);
	assert.equal(b.usage.cost_in_usd_ticks, 5 * 5 * 1e8, '$0.05/s, 10^10 ticks a dollar');
	assert.equal(b.video.url, `${base}/files/xai-video-${r.json.request_id}.mp4`);
	const again = await poll(r.json.request_id);
	assert.deepEqual(again.json, b, 'idempotent after done');
	const mp4 = await C.request('GET', b.video.url);
	assert.equal(mp4.status, 200);
	assert.equal(mp4.headers['content-type'], 'video/mp4');
	const file = path.join(tmp, 'x.mp4');
	fs.writeFileSync(file, mp4.body);
	const info = JSON.parse(execFileSync('ffprobe', ['-v', 'error', '-show_entries', 'format=duration:stream=codec_type,width,height,codec_name', '-of', 'json', file]));
	assert.equal(Number(info.format.duration), 5);
	const v = info.streams.find((s) => s.codec_type === 'video');
	assert.deepEqual([v.codec_name, v.width, v.height], ['h264', 180, 240], 'follows the 3:4 image');
	assert.ok(info.streams.some((s) => s.codec_type === 'audio' && s.codec_name === 'aac'));
	const l = (await C.request('GET', `${base}/_sim/ledger`)).json;
	assert.deepEqual([l[0].request_id, l[0].seconds, l[0].cents, l[0].outcome], [r.json.request_id, 5, 25, 'ok']);
});

test('submit validation: 422 plain text for bodies that do not deserialize, 400 JSON for bad values', async () => {
	const raw = await C.request('POST', `${base}/v1/videos/generations`, { headers: Object.assign({ 'content-type': 'application/json' }, AUTH), body: '{"prompt": ' });
	assert.equal(raw.status, 422);
	assert.match(raw.headers['content-type'], /^text\/plain/);
	assert.match(raw.text, /^Failed to deserialize the JSON body into the target type: /);
	for (const body of [{ prompt: 5 }, { prompt: 'p', duration: 5.5 }, { prompt: 'p', duration: 'five' }, { prompt: 'p', image: 'http://x' }, { prompt: 'p', generate_audio: 'yes' }]) {
		const r = await gen(body);
		assert.equal(r.status, 422, JSON.stringify(body));
		assert.match(r.text, /^Failed to deserialize the JSON body into the target type: .*invalid type/);
	}
	const bad = [
		{ prompt: 'p', duration: 16 }, { prompt: 'p', duration: 0 }, { prompt: 'p', aspect_ratio: '5:4' }, { prompt: 'p', resolution: '1080p' },
		{ prompt: 'p', model: 'grok-nope' }, { prompt: 'p', image: { url: IMAGE, file_id: 'f' } }, { prompt: 'p', image: {} },
		{ prompt: 'p', reference_audios: [{ voice_id: 'v' }] }, { prompt: 'p', image: { url: IMAGE }, reference_images: [{ url: IMAGE }] },
		{ prompt: 'p', reference_images: Array(8).fill({ url: IMAGE }) }, { prompt: 'p', reference_images: [{ url: IMAGE }], duration: 12 },
	];
	for (const body of bad) {
		const r = await gen(body);
		assert.equal(r.status, 400, JSON.stringify(body).slice(0, 100));
		assert.equal(r.json.code, 'invalid-argument');
		assert.equal(typeof r.json.error, 'string');
	}
	const ok = [
		{ prompt: 'p', duration: '8' }, { prompt: 'p', seconds: 3 }, { prompt: 'p', input_reference: { url: IMAGE } },
		{ prompt: 'p', model: 'grok-imagine-video-1.5', resolution: '1080p', aspect_ratio: '21:9' }, { prompt: 'p', unknown_field: 1 },
		{ prompt: 'p', model: 'grok-imagine-video-beta' }, { prompt: 'p', size: '1280x720' },
	];
	for (const body of ok) assert.equal((await gen(body)).status, 200, JSON.stringify(body).slice(0, 100));
	const l = (await C.request('GET', `${base}/_sim/ledger`)).json;
	assert.deepEqual(l.map((e) => e.seconds), [8, 3, 8, 8, 8, 8, 8], 'duration defaults to 8');
	assert.equal(l[3].cents, 8 * 25, 'grok-imagine-video-1.5 at 1080p');
	assert.equal(l[5].model, 'grok-imagine-video', 'the beta alias');
	assert.equal(l[6].resolution, '720p', 'the deprecated size');
});

test('deferred failures: an empty prompt with no image, an unreachable image, injected failures', async () => {
	await config({ processing_s: 0 });
	let id = (await gen({ prompt: '' })).json.request_id;
	let [, r] = await untilDone(id);
	assert.equal(r.status, 200);
	assert.deepEqual(r.json, { status: 'failed', error: { code: 'invalid_argument', message: 'Prompt cannot be empty. Please provide a prompt.' } });
	id = (await gen({ prompt: 'p', image: { url: 'https://example.com/a.jpg' } })).json.request_id;
	[, r] = await untilDone(id);
	assert.equal(r.json.status, 'failed');
	assert.equal(r.json.error.code, 'invalid_argument');
	await config({ processing_s: 0, fail_jobs: 1, fail_code: 'service_unavailable' });
	id = (await gen(BODY)).json.request_id;
	[, r] = await untilDone(id);
	assert.deepEqual(Object.keys(r.json).sort(), ['error', 'status'], 'no video, model or progress');
	assert.equal(r.json.error.code, 'service_unavailable');
	const l = (await C.request('GET', `${base}/_sim/ledger`)).json;
	assert.ok(l.every((e) => e.billed === false), 'failed jobs are not billed');
});

test('moderation, expiry, the legacy shape and empty 202s', async () => {
	await config({ processing_s: 0, moderate_jobs: 1 });
	let id = (await gen(BODY)).json.request_id;
	let [, r] = await untilDone(id);
	assert.equal(r.json.status, 'done');
	assert.equal(r.json.video.respect_moderation, false);
	assert.equal(r.json.video.url, null);
	assert.equal((await C.request('GET', `${base}/_sim/ledger`)).json[0].billed, true, 'still billed');

	await config({ processing_s: 0, job_ttl: 0.05 });
	id = (await gen(BODY)).json.request_id;
	await new Promise((res) => setTimeout(res, 80));
	r = await poll(id);
	assert.equal(r.status, 200);
	assert.deepEqual(r.json, { status: 'expired' });

	await config({ processing_s: 0.15, job_ttl: null, legacy_shape: true });
	id = (await gen(BODY)).json.request_id;
	r = await poll(id);
	assert.equal(r.status, 202);
	assert.deepEqual(r.json, { status: 'pending' });
	[, r] = await untilDone(id);
	assert.ok(!('status' in r.json), 'done without a status field');
	assert.ok(r.json.video.url);
	assert.equal(r.json.model, 'grok-imagine-video');

	await config({ processing_s: 0.15, legacy_shape: false, empty_202: true });
	id = (await gen(BODY)).json.request_id;
	r = await poll(id);
	assert.equal(r.status, 202);
	assert.equal(r.body.length, 0);
	assert.equal(r.headers['content-length'], '0');
});

test('unknown request ids are 404; video URLs expire after url_ttl', async () => {
	let r = await poll('00000000-0000-4000-8000-000000000000');
	assert.equal(r.status, 404);
	assert.equal(r.json.code, 'not-found');
	await config({ processing_s: 0, url_ttl: 0.1 });
	const id = (await gen(BODY)).json.request_id;
	const [, done] = await untilDone(id);
	assert.equal((await C.request('GET', done.json.video.url)).status, 200);
	await new Promise((res) => setTimeout(res, 150));
	r = await C.request('GET', done.json.video.url);
	assert.equal(r.status, 404);
});

test('rate limit: 429 resource-exhausted, with Retry-After when asked', async () => {
	await config({ rate_limit_rpm: 60 });
	assert.equal((await gen(BODY)).status, 200);
	let r = await gen(BODY);
	assert.equal(r.status, 429);
	assert.equal(r.json.code, 'resource-exhausted');
	assert.match(r.json.error, /^Too many requests for team [0-9a-f-]{36} and model grok-imagine-video/);
	assert.equal(r.headers['retry-after'], undefined);
	await config({ rate_limit_retry_after: true });
	r = await gen(BODY);
	assert.equal(r.status, 429);
	assert.ok(Number(r.headers['retry-after']) >= 1);
	assert.equal((await C.request('GET', `${base}/_sim/ledger`)).json.length, 1);
});

test('faults through the shared machinery: submit, status and file downloads', async () => {
	await config({ processing_s: 0, faults: { submit: [{ status: 503, count: 1 }, { accept_then_drop: true, count: 1 }], status: [{ status: 500, count: 1 }, { status: 502, count: 1 }], cdn: [{ truncated: true, count: 1 }] } });
	let r = await gen(BODY);
	assert.equal(r.status, 503);
	assert.equal(r.json.code, 'unavailable');
	r = await gen(BODY);
	assert.ok(r.error, 'accepted, answer lost');
	const l = (await C.request('GET', `${base}/_sim/ledger`)).json;
	assert.equal(l.length, 1);
	const id = l[0].request_id;
	assert.equal((await poll(id)).status, 500);
	r = await poll(id);
	assert.equal(r.status, 502);
	assert.match(r.text, /nginx/);
	const [, done] = await untilDone(id);
	r = await C.request('GET', done.json.video.url);
	assert.ok(r.error && r.partial.length < Number(r.headers['content-length']));
});

test('deterministic mode: polls_before_done 202s, then done', async () => {
	const d = await C.spawnSim(XAI, ['--video-size', 'small', '--key', 'xai-secret-token', '--mode', 'deterministic']);
	try {
		await C.request('POST', `${d.base}/_sim/config`, { body: { polls_before_done: 3 } });
		const id = (await C.request('POST', `${d.base}/v1/videos/generations`, { headers: AUTH, body: BODY })).json.request_id;
		const seen = [];
		for (let i = 0; i < 5; i++) {
			const r = await C.request('GET', `${d.base}/v1/videos/${id}`, { headers: AUTH });
			seen.push(`${r.status}:${r.json.status}:${r.json.progress}`);
		}
		assert.deepEqual(seen, ['202:pending:0', '202:pending:33', '202:pending:66', '200:done:100', '200:done:100']);
	} finally { await d.stop(); }
});

test('edits and extensions; output.upload_url receives the MP4', async () => {
	await config({ processing_s: 0 });
	const first = (await gen(BODY)).json.request_id;
	const [, done] = await untilDone(first);
	const src = done.json.video.url;
	let r = await C.request('POST', `${base}/v1/videos/extensions`, { headers: AUTH, body: { prompt: 'go on', video: { url: src }, duration: 4 } });
	assert.equal(r.status, 200);
	let [, out] = await untilDone(r.json.request_id);
	assert.equal(out.json.video.duration, 9, 'source + extension');
	r = await C.request('POST', `${base}/v1/videos/edits`, { headers: AUTH, body: { prompt: 'make it dusk', video: { url: src } } });
	[, out] = await untilDone(r.json.request_id);
	assert.equal(out.json.video.duration, 5);
	r = await C.request('POST', `${base}/v1/videos/edits`, { headers: AUTH, body: { prompt: 'x', model: 'grok-imagine-video-1.5', video: { url: src } } });
	[, out] = await untilDone(r.json.request_id);
	assert.equal(out.json.error.code, 'failed_precondition');
	assert.equal((await C.request('POST', `${base}/v1/videos/edits`, { headers: AUTH, body: { video: { url: src } } })).status, 400);
	assert.equal((await C.request('POST', `${base}/v1/videos/extensions`, { headers: AUTH, body: { prompt: 'p', video: { url: src }, duration: 11 } })).status, 400);

	let received = null;
	const sink = http.createServer((req, res) => {
		const chunks = [];
		req.on('data', (c) => chunks.push(c));
		req.on('end', () => { received = { type: req.headers['content-type'], body: Buffer.concat(chunks) }; res.end(); });
	});
	await new Promise((res) => sink.listen(0, '127.0.0.1', res));
	try {
		r = await gen(Object.assign({}, BODY, { output: { upload_url: `http://127.0.0.1:${sink.address().port}/put/here.mp4` } }));
		[, out] = await untilDone(r.json.request_id);
		assert.equal(out.json.status, 'done');
		assert.equal(received.type, 'video/mp4');
		assert.ok(received.body.length > 1000);
	} finally { sink.close(); }
});

test('images: n items as URLs or b64_json; size is refused', async () => {
	const img = (body) => C.request('POST', `${base}/v1/images/generations`, { headers: AUTH, body });
	let r = await img({ prompt: 'a house', n: 2 });
	assert.equal(r.status, 200);
	assert.equal(r.json.data.length, 2);
	assert.equal((await C.request('GET', r.json.data[0].url)).headers['content-type'], 'image/png');
	assert.ok(r.json.usage.cost_in_usd_ticks > 0);
	r = await img({ prompt: 'a house', response_format: 'b64_json', aspect_ratio: '16:9' });
	assert.ok(Buffer.from(r.json.data[0].b64_json, 'base64').subarray(1, 4).toString() === 'PNG');
	assert.ok(!r.json.data[0].b64_json.startsWith('data:'));
	r = await img({ prompt: 'a house', size: '1024x1024' });
	assert.equal(r.status, 400);
	assert.equal(r.json.error, 'Argument not supported: size');
	assert.equal((await img({ n: 1 })).status, 422);
	assert.equal((await img({ prompt: 'p', n: 11 })).status, 400);
	r = await C.request('GET', `${base}/v1/video-generation-models`, { headers: AUTH });
	assert.ok(r.json.models.some((m) => m.id === 'grok-imagine-video'));
});
