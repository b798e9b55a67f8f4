// The Kling models' contracts in the Fal simulator (a field a model does not
// take is a 422 in Fal's shape) and the output's shape, which follows the
// input image as Kling's and xAI's do, whatever aspect is asked.
'use strict';
const test = require('node:test');
const assert = require('node:assert/strict');
const path = require('path');
const fs = require('fs');
const os = require('os');
const { execFileSync } = require('child_process');
const C = require('../common');

const FAL = path.join(__dirname, '..', 'fal_sim.js');
const XAI = path.join(__dirname, '..', 'xai_sim.js');
const KEY = { authorization: 'Key kid:secret' };
const XKEY = { authorization: 'Bearer xk' };
const APP = '/fal-ai/kling-video';
const V26 = `${APP}/v2.6/pro/image-to-video`;
const V25 = `${APP}/v2.5-turbo/pro/image-to-video`;
const V21 = `${APP}/v2.1/pro/image-to-video`;
const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'models-test-'));
let fal, xai;

const image = (size, color) => `data:image/jpeg;base64,${execFileSync('ffmpeg', ['-v', 'error', '-f', 'lavfi', '-i',
	`color=c=${color}:s=${size}`, '-frames:v', '1', '-f', 'image2pipe', '-c:v', 'mjpeg', '-']).toString('base64')}`;
const WIDE = image('640x360', 'teal');
const TALL = image('360x640', 'orange');

// What each model takes, its image field names, and fields it does not take.
const MODELS = [
	{ ep: V26, start: 'start_image_url', end: 'end_image_url', extra: { generate_audio: false, voice_ids: [] },
		refused: { cfg_scale: 0.5, aspect_ratio: '9:16', image_url: WIDE, tail_image_url: WIDE, resolution: '1080p' } },
	{ ep: V25, start: 'image_url', end: 'tail_image_url', extra: { cfg_scale: 0.5 },
		refused: { generate_audio: false, start_image_url: WIDE, end_image_url: WIDE, aspect_ratio: '9:16', voice_ids: [] } },
	{ ep: V21, start: 'image_url', end: 'tail_image_url', extra: { cfg_scale: 0.5 },
		refused: { generate_audio: true, start_image_url: WIDE, end_image_url: WIDE, aspect_ratio: '16:9' } },
];
const inputOf = (m, img, more = {}) => Object.assign({ prompt: 'slow push-in', [m.start]: img, duration: '5', negative_prompt: 'blur' }, m.extra, more);

async function run(ep, input) {
	const s = await C.request('POST', `${fal.base}/queue${ep}`, { headers: KEY, body: input });
	assert.equal(s.status, 200, s.text);
	for (const end = Date.now() + 30000; Date.now() < end;) {
		const st = await C.request('GET', `${fal.base}/queue${APP}/requests/${s.json.request_id}/status`, { headers: KEY });
		if (st.json.status === 'COMPLETED') break;
		await new Promise((r) => setTimeout(r, 10));
	}
	return C.request('GET', `${fal.base}/queue${APP}/requests/${s.json.request_id}`, { headers: KEY });
}

function dims(body) {
	const file = path.join(tmp, `${Math.random()}.mp4`);
	fs.writeFileSync(file, body);
	const s = JSON.parse(execFileSync('ffprobe', ['-v', 'error', '-select_streams', 'v:0', '-show_entries', 'stream=width,height', '-of', 'json', file])).streams[0];
	return [s.width, s.height];
}

test.before(async () => {
	fal = await C.spawnSim(FAL, ['--video-size', 'small', '--key', 'kid:secret']);
	xai = await C.spawnSim(XAI, ['--video-size', 'small', '--key', 'xk']);
	for (const s of [fal, xai]) await C.request('POST', `${s.base}/_sim/config`, { body: s === fal ? { queue_s: 0, processing_s: 0 } : { processing_s: 0 } });
});
test.after(async () => { await fal.stop(); await xai.stop(); fs.rmSync(tmp, { recursive: true, force: true }); });

test('each Kling model takes its own fields: all of them together give a video', async () => {
	for (const m of MODELS) {
		const r = await run(m.ep, inputOf(m, WIDE, { [m.end]: TALL, duration: '10' }));
		assert.equal(r.status, 200, `${m.ep}: ${r.text}`);
		assert.deepEqual(Object.keys(r.json), ['video']);
	}
	const models = (await C.request('GET', `${fal.base}/_sim/models`)).json;
	for (const m of MODELS) assert.ok(models.includes(m.ep.slice(1)), m.ep);
});

test('a field a model does not take is a 422 naming it, in Fal\'s detail shape', async () => {
	for (const m of MODELS) {
		for (const [field, value] of Object.entries(m.refused)) {
			const r = await run(m.ep, inputOf(m, WIDE, { [field]: value }));
			assert.equal(r.status, 422, `${m.ep} ${field}: ${r.text}`);
			assert.ok(Array.isArray(r.json.detail), r.text);
			assert.deepEqual(r.json.detail, [{ loc: ['body', field], msg: 'Extra inputs are not permitted', type: 'extra_forbidden',
				url: 'https://docs.fal.ai/errors#extra_forbidden', input: value }], `${m.ep} ${field}`);
		}
		// the other generation's image field instead of this one's: missing + extra
		const other = m.start === 'image_url' ? 'start_image_url' : 'image_url';
		const input = inputOf(m, WIDE);
		delete input[m.start];
		input[other] = WIDE;
		const r = await run(m.ep, input);
		assert.equal(r.status, 422);
		assert.deepEqual(r.json.detail.map((d) => [d.loc[1], d.type]).sort(), [[m.start, 'missing'], [other, 'extra_forbidden']].sort());
	}
	// validate_at_submit answers at once, same body
	await C.request('POST', `${fal.base}/_sim/config`, { body: { validate_at_submit: true } });
	const s = await C.request('POST', `${fal.base}/queue${V25}`, { headers: KEY, body: inputOf(MODELS[1], WIDE, { generate_audio: true }) });
	assert.equal(s.status, 422);
	assert.deepEqual(s.json.detail[0].loc, ['body', 'generate_audio']);
	await C.request('POST', `${fal.base}/_sim/config`, { body: { validate_at_submit: false } });
});

test('v2.5-turbo pro is priced 35c for 5 s and 7c a second after that', async () => {
	await C.request('POST', `${fal.base}/_sim/reset`);
	await C.request('POST', `${fal.base}/_sim/config`, { body: { queue_s: 0, processing_s: 0 } });
	await run(V25, inputOf(MODELS[1], WIDE));
	await run(V25, inputOf(MODELS[1], WIDE, { duration: '10' }));
	const l = (await C.request('GET', `${fal.base}/_sim/ledger`)).json;
	assert.deepEqual(l.map((e) => [e.endpoint, e.seconds, e.cents, e.audio]),
		[[V25.slice(1), 5, 35, false], [V25.slice(1), 10, 70, false]]);
});

test('Kling answers in the input image\'s shape: portrait from portrait, landscape from landscape', async () => {
	for (const m of MODELS) {
		for (const [img, want] of [[TALL, [180, 320]], [WIDE, [320, 180]]]) {
			const r = await run(m.ep, inputOf(m, img));
			assert.equal(r.status, 200, r.text);
			assert.deepEqual(dims((await C.request('GET', r.json.video.url)).body), want, `${m.ep} ${want}`);
		}
	}
	// with extra fields allowed, an asked aspect_ratio changes nothing
	await C.request('POST', `${fal.base}/_sim/config`, { body: { forbid_extra_fields: false } });
	const r = await run(V26, inputOf(MODELS[0], TALL, { aspect_ratio: '16:9' }));
	assert.equal(r.status, 200, r.text);
	assert.deepEqual(dims((await C.request('GET', r.json.video.url)).body), [180, 320]);
	await C.request('POST', `${fal.base}/_sim/config`, { body: { forbid_extra_fields: true } });
});

test('xAI answers in the input image\'s shape whatever aspect_ratio is asked', async () => {
	for (const [img, aspect, want] of [[TALL, '16:9', [180, 320]], [WIDE, '9:16', [320, 180]], [WIDE, '1:1', [320, 180]]]) {
		const s = await C.request('POST', `${xai.base}/v1/videos/generations`, { headers: XKEY,
			body: { model: 'grok-imagine-video', prompt: 'slow pan', image: { url: img }, duration: 5, aspect_ratio: aspect } });
		assert.equal(s.status, 200, s.text);
		let b;
		for (const end = Date.now() + 30000; Date.now() < end;) {
			b = await C.request('GET', `${xai.base}/v1/videos/${s.json.request_id}`, { headers: XKEY });
			if (b.status === 200) break;
			await new Promise((r) => setTimeout(r, 10));
		}
		assert.equal(b.json.status, 'done', b.text);
		assert.deepEqual(dims((await C.request('GET', b.json.video.url)).body), want, `${aspect} asked`);
	}
});
