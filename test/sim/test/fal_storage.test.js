// The Fal.ai simulator's storage and CDN (initiate, signed PUT, GET,
// multipart), its billing ledger, request log and control endpoints.
'use strict';
const test = require('node:test');
const assert = require('node:assert/strict');
const path = require('path');
const crypto = require('crypto');
const C = require('../common');

const FAL = path.join(__dirname, '..', 'fal_sim.js');
const KEY = { authorization: 'Key kid:secret' };
let sim, base;

const initiate = (body, query = '?storage_type=fal-cdn-v3', headers = KEY, kind = 'initiate') =>
	C.request('POST', `${base}/rest/storage/upload/${kind}${query}`, { headers, body });
const config = (knobs) => C.request('POST', `${base}/_sim/config`, { body: knobs });

test.before(async () => { sim = await C.spawnSim(FAL, ['--video-size', 'small', '--key', 'kid:secret', '--mode', 'deterministic', '--time-scale', '0.01']); base = sim.base; });
test.after(() => sim.stop());
test.beforeEach(() => C.request('POST', `${base}/_sim/reset`));

test('storage: initiate, PUT without auth, GET the bytes with their type', async () => {
	const r = await initiate({ content_type: 'image/jpeg', file_name: 'photo 1.jpg' });
	assert.equal(r.status, 200);
	assert.deepEqual(Object.keys(r.json).sort(), ['file_url', 'upload_url']);
	assert.match(r.json.upload_url, new RegExp(`^${base}/cdn/upload/[0-9a-f]+$`));
	assert.match(r.json.file_url, new RegExp(`^${base}/cdn/files/[^/]+/photo_1\\.jpg$`));
	assert.ok(r.headers['x-fal-request-id']);
	let g = await C.request('GET', r.json.file_url);
	assert.equal(g.status, 404, 'not there before the PUT');
	const bytes = crypto.randomBytes(5000);
	const p = await C.request('PUT', r.json.upload_url, { headers: { 'content-type': 'image/jpeg' }, body: bytes });
	assert.equal(p.status, 200);
	g = await C.request('GET', r.json.file_url);
	assert.equal(g.status, 200);
	assert.equal(g.headers['content-type'], 'image/jpeg');
	assert.ok(g.body.equals(bytes));
	const part = await C.request('GET', r.json.file_url, { headers: { range: 'bytes=10-19' } });
	assert.equal(part.status, 206);
	assert.ok(part.body.equals(bytes.subarray(10, 20)));
	const head = await C.request('HEAD', r.json.file_url);
	assert.equal(Number(head.headers['content-length']), 5000);
	const again = await C.request('PUT', r.json.upload_url, { headers: { 'content-type': 'image/jpeg' }, body: bytes });
	assert.equal(again.status, 403, 'a second PUT is refused');
	const reqs = (await C.request('GET', `${base}/_sim/requests?path=/cdn/upload/`)).json;
	assert.deepEqual(reqs[0].body, { bytes: 5000, sha256: crypto.createHash('sha256').update(bytes).digest('hex') });
});

test('storage: an expired upload URL is a 403; a bad storage_type a 422; a default file name', async () => {
	await config({ upload_ttl: 0 });
	const r = await initiate({ content_type: 'image/png' });
	assert.match(r.json.file_url, /\/\d+\.png$/);
	await new Promise((res) => setTimeout(res, 5));
	const p = await C.request('PUT', r.json.upload_url, { body: Buffer.from('x') });
	assert.equal(p.status, 403);
	assert.equal((await initiate({ content_type: 'image/png' }, '?storage_type=s3')).status, 422);
	assert.equal((await C.request('PUT', `${base}/cdn/upload/nonexistent`, { body: 'x' })).status, 403);
});

test('storage: multipart initiate, parts, complete', async () => {
	const r = await initiate({ content_type: 'video/mp4', file_name: 'big.mp4' }, '?storage_type=fal-cdn-v3', KEY, 'initiate-multipart');
	assert.equal(r.status, 200);
	const a = crypto.randomBytes(3000), b = crypto.randomBytes(1000);
	const p1 = await C.request('PUT', `${r.json.upload_url}/1`, { body: a });
	const p2 = await C.request('PUT', `${r.json.upload_url}/2`, { body: b });
	assert.equal(p1.json.partNumber, 1);
	const done = await C.request('POST', `${r.json.upload_url}/complete`, { body: { parts: [p2.json, p1.json] } });
	assert.equal(done.status, 200);
	const g = await C.request('GET', r.json.file_url);
	assert.ok(g.body.equals(Buffer.concat([a, b])));
	assert.equal(g.headers['content-type'], 'video/mp4');
});

test('ledger: Kling prices per model, audio and duration; summary spots duplicate inputs', async () => {
	const img = 'data:image/png;base64,iVBORw0KGgo=';
	const sub = (ep, input) => C.request('POST', `${base}/queue/fal-ai/kling-video/${ep}/image-to-video`, { headers: KEY, body: input });
	await sub('v2.6/pro', { prompt: 'p', start_image_url: img, duration: '5', generate_audio: false });
	await sub('v2.6/pro', { prompt: 'p', start_image_url: img, duration: '5', generate_audio: false });
	await sub('v2.6/pro', { prompt: 'p', start_image_url: img, duration: '10', generate_audio: true });
	await sub('v2.6/pro', { prompt: 'p', start_image_url: img });
	await sub('v2.1/pro', { prompt: 'p', image_url: img, duration: '5' });
	await sub('v2.1/pro', { prompt: 'p', image_url: img, duration: '10' });
	const ledger = (await C.request('GET', `${base}/_sim/ledger`)).json;
	assert.deepEqual(ledger.map((e) => [e.seconds, e.audio, e.cents]), [[5, false, 35], [5, false, 35], [10, true, 140], [5, true, 70], [5, false, 49], [10, false, 98]]);
	assert.match(JSON.stringify(ledger[0]), /"seconds":5,"audio":false,"cents":35/);
	for (const e of ledger) {
		assert.match(e.request_id, /^[0-9a-f-]{36}$/);
		assert.match(e.endpoint, /^fal-ai\/kling-video\/v2\.[16]\/pro\/image-to-video$/);
		assert.equal(e.input.prompt, 'p');
	}
	const sum = (await C.request('GET', `${base}/_sim/ledger?summary=1`)).json;
	assert.equal(sum.submits, 6);
	assert.equal(sum.cents, 35 + 35 + 140 + 70 + 49 + 98);
	assert.equal(sum.duplicate_inputs.length, 1);
	assert.equal(sum.duplicate_inputs[0].submits, 2);
});

test('request log: method, path, headers with Authorization cut to 4 characters, body, status, time', async () => {
	await C.request('POST', `${base}/queue/fal-ai/kling-video/v2.6/pro/image-to-video?x=1`, { headers: Object.assign({ 'x-fal-runner-hint': 'r1' }, KEY), body: { prompt: 'p' } });
	const list = (await C.request('GET', `${base}/_sim/requests`)).json;
	assert.equal(list.length, 1, '/_sim calls are not logged');
	const e = list[0];
	assert.deepEqual(Object.keys(e).slice(0, 2), ['method', 'path']);
	assert.equal(e.method, 'POST');
	assert.equal(e.path, '/queue/fal-ai/kling-video/v2.6/pro/image-to-video');
	assert.equal(e.query, '?x=1');
	assert.equal(e.headers.authorization, 'Key …');
	assert.equal(e.headers['x-fal-runner-hint'], 'r1');
	assert.deepEqual(e.body, { prompt: 'p' });
	assert.equal(e.status, 200);
	assert.ok(!Number.isNaN(Date.parse(e.time)));
	assert.equal(typeof e.ms, 'number');
	assert.ok(!JSON.stringify(list).includes('secret'), 'the secret never appears');
});

test('control: config merges known knobs, refuses unknown ones, reset restores defaults', async () => {
	let r = await config({ queue_s: 3, fail_jobs: 2 });
	assert.equal(r.status, 200);
	assert.equal(r.json.queue_s, 3);
	r = await config({ no_such_knob: 1 });
	assert.equal(r.status, 400);
	r = await C.request('POST', `${base}/_sim/config`, { body: '{nope' });
	assert.equal(r.status, 400);
	r = await C.request('GET', `${base}/_sim/config`);
	assert.equal(r.json.fail_jobs, 2);
	await C.request('POST', `${base}/_sim/reset`);
	r = await C.request('GET', `${base}/_sim/config`);
	assert.equal(r.json.fail_jobs, 0);
	assert.equal((await C.request('GET', `${base}/_sim/health`)).json.mode, 'deterministic');
});
