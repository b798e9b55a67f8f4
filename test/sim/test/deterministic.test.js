// Deterministic mode: each status poll moves a job one state on, ids come
// from the seed, and the same inputs give the same MP4 bytes in two
// simulators with separate work dirs.  Also the command line contract.
'use strict';
const test = require('node:test');
const assert = require('node:assert/strict');
const path = require('path');
const fs = require('fs');
const os = require('os');
const crypto = require('crypto');
const { execFileSync, spawn } = require('child_process');
const C = require('../common');

const FAL = path.join(__dirname, '..', 'fal_sim.js');
const XAI = path.join(__dirname, '..', 'xai_sim.js');
const KEY = { authorization: 'Key kid:secret' };
const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'sim-det-'));
const JPG = execFileSync('ffmpeg', ['-v', 'error', '-f', 'lavfi', '-i', 'testsrc2=s=400x300', '-frames:v', '1', '-f', 'image2pipe', '-c:v', 'mjpeg', '-']);
const INPUT = { prompt: 'p', start_image_url: `data:image/jpeg;base64,${JPG.toString('base64')}`, duration: '5', generate_audio: true };
const sims = [];

async function start(args) {
	const s = await C.spawnSim(FAL, ['--video-size', 'small', '--key', 'kid:secret', '--mode', 'deterministic', ...args]);
	sims.push(s);
	return s;
}

test.after(async () => {
	for (const s of sims) await s.stop();
	fs.rmSync(tmp, { recursive: true, force: true });
});

async function states(base, id) {
	const out = [];
	for (let i = 0; i < 20; i++) {
		const r = await C.request('GET', `${base}/queue/fal-ai/kling-video/requests/${id}/status`, { headers: KEY });
		out.push(`${r.status}:${r.json.status}`);
		if (r.json.status === 'COMPLETED') break;
	}
	return out;
}

test('each status poll advances exactly one state; the poll counts are knobs', async () => {
	const s = await start(['--workdir', path.join(tmp, 'a')]);
	const id = (await C.request('POST', `${s.base}/queue/fal-ai/kling-video/v2.6/pro/image-to-video`, { headers: KEY, body: INPUT })).json.request_id;
	assert.deepEqual(await states(s.base, id), ['202:IN_PROGRESS', '200:COMPLETED']);
	await C.request('POST', `${s.base}/_sim/config`, { body: { polls_before_in_progress: 2, polls_before_completed: 3 } });
	const id2 = (await C.request('POST', `${s.base}/queue/fal-ai/kling-video/v2.6/pro/image-to-video`, { headers: KEY, body: INPUT })).json.request_id;
	const r = await C.request('GET', `${s.base}/queue/fal-ai/kling-video/requests/${id2}/status`, { headers: KEY });
	assert.equal(r.json.queue_position, 1, 'the position counts the polls left');
	assert.deepEqual([r.json.status].concat(await states(s.base, id2)),
		['IN_QUEUE', '202:IN_QUEUE', '202:IN_PROGRESS', '202:IN_PROGRESS', '202:IN_PROGRESS', '200:COMPLETED']);
});

test('the same seed gives the same ids, and the same inputs the same output bytes', async () => {
	const results = [];
	for (const dir of ['x', 'y']) {
		const s = await start(['--seed', '99', '--workdir', path.join(tmp, dir)]);
		const sub = (await C.request('POST', `${s.base}/queue/fal-ai/kling-video/v2.6/pro/image-to-video`, { headers: KEY, body: INPUT })).json;
		await states(s.base, sub.request_id);
		const out = (await C.request('GET', sub.response_url, { headers: KEY })).json;
		const mp4 = (await C.request('GET', out.video.url)).body;
		results.push({ id: sub.request_id, sha: crypto.createHash('sha256').update(mp4).digest('hex'), size: out.video.file_size });
	}
	assert.equal(results[0].id, results[1].id);
	assert.equal(results[0].sha, results[1].sha);
	assert.equal(results[0].size, results[1].size);
});

test('command line: --port-file, loopback only, unknown options, SIGTERM exits 0', async () => {
	const portFile = path.join(tmp, 'port');
	const s = await C.spawnSim(XAI, ['--video-size', 'small', '--port-file', portFile, '--key', 'k']);
	assert.equal(fs.readFileSync(portFile, 'utf8'), s.base);
	assert.match(s.base, /^http:\/\/127\.0\.0\.1:\d+$/);
	assert.equal(await s.stop(), 0);
	for (const args of [['--host', '0.0.0.0'], ['--bogus'], ['--mode', 'slow'], ['--video-size', 'big']]) {
		const code = await new Promise((resolve) => {
			const p = spawn(process.execPath, [FAL, ...args], { stdio: 'ignore' });
			p.on('exit', resolve);
		});
		assert.equal(code, 2, args.join(' '));
	}
});

test('robustness: bad paths, bad encodings, huge and odd bodies never crash the simulator', async () => {
	const s = await start([]);
	const b = s.base;
	const odd = [
		['GET', '/%E0%A4%A', undefined], ['GET', '/queue', undefined], ['DELETE', '/queue/a/b/requests/c', undefined],
		['POST', '/queue/fal-ai/kling-video/v2.6/pro/image-to-video', '\u0000\u0001'], ['POST', '/queue/fal-ai/kling-video/v2.6/pro/image-to-video', 'null'],
		['POST', '/queue/fal-ai/kling-video/v2.6/pro/image-to-video', '{"prompt": {"deep": [1, 2, {"x": null}]}, "start_image_url": 5}'],
		['POST', '/rest/storage/upload/initiate', '[]'], ['PUT', '/cdn/upload/', 'x'], ['GET', '/cdn/files/../../etc/passwd', undefined],
		['POST', '/_sim/config', '[1]'], ['GET', '/_sim/nothing', undefined],
	];
	for (const [m, p, body] of odd) {
		const r = await C.request(m, b + p, { headers: Object.assign({ 'content-type': 'application/json' }, KEY), body });
		assert.ok(r.status >= 200 && r.status < 500, `${m} ${p} -> ${r.status} ${r.text}`);
	}
	const big = await C.request('POST', `${b}/queue/fal-ai/kling-video/v2.6/pro/image-to-video`, { headers: KEY, body: Buffer.alloc(33 * 1024 * 1024, 0x20) });
	assert.ok(big.status === 413 || big.error, 'a body over the limit is refused');
	assert.equal((await C.request('GET', `${b}/_sim/health`)).json.ok, true, 'still up');
});

test('concurrency: 300 submits and their polls at once all complete', async () => {
	const s = await C.spawnSim(FAL, ['--video-size', 'small', '--key', 'kid:secret', '--time-scale', '0.2']);
	sims.push(s);
	const ids = await Promise.all(Array.from({ length: 300 }, (_, i) => C.request('POST', `${s.base}/queue/fal-ai/kling-video/v2.6/pro/image-to-video`,
		{ headers: KEY, body: Object.assign({}, INPUT, { prompt: `clip ${i}` }) }).then((r) => r.json.request_id)));
	const done = await Promise.all(ids.map(async (id) => {
		for (;;) {
			const r = await C.request('GET', `${s.base}/queue/fal-ai/kling-video/requests/${id}/status`, { headers: KEY });
			if (r.json.status === 'COMPLETED') return (await C.request('GET', `${s.base}/queue/fal-ai/kling-video/requests/${id}`, { headers: KEY })).status;
			await new Promise((res) => setTimeout(res, 20));
		}
	}));
	assert.deepEqual([...new Set(done)], [200]);
	assert.equal((await C.request('GET', `${s.base}/_sim/ledger?summary=1`)).json.submits, 300);
});
