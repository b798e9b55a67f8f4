// A local simulator of the Fal.ai queue, storage and CDN APIs, for
// hagenkit's tests and demo (contract: ../shared/specs/fal.md, section 9).
// Node's standard library only; real MP4s are made with the ffmpeg CLI.
//
//   node test/sim/fal_sim.js [--port 0] [--key ID:SECRET] [--time-scale X]
//        [--mode fast|realistic] [--workdir DIR] [--video-size WxH] [--seed N]
//
// Prints {"listening": "http://127.0.0.1:PORT"} when ready.  A client
// configured with hagen.fal_queue_url = BASE/queue and hagen.fal_rest_url =
// BASE/rest sees the real relative paths.  /_sim/ledger, /_sim/requests,
// /_sim/config (POST, JSON knobs) and /_sim/reset need no auth.
'use strict';
const http = require('http');
const fs = require('fs');
const os = require('os');
const path = require('path');
const crypto = require('crypto');
const { execFile } = require('child_process');

const opts = { port: 0, key: 'sim-key-id:sim-key-secret', timeScale: 1, mode: 'fast',
	workdir: null, videoSize: '320x180', seed: 1 };
for (let i = 2; i < process.argv.length; i++) {
	const a = process.argv[i], v = () => process.argv[++i];
	if (a === '--port') opts.port = Number(v());
	else if (a === '--key') opts.key = v();
	else if (a === '--time-scale') opts.timeScale = Number(v());
	else if (a === '--mode') opts.mode = v();
	else if (a === '--workdir') opts.workdir = v();
	else if (a === '--video-size') opts.videoSize = v();
	else if (a === '--seed') opts.seed = Number(v());
	else { process.stderr.write(`fal_sim: unknown option ${a}\n`); process.exit(2); }
}
const workdir = opts.workdir || fs.mkdtempSync(path.join(os.tmpdir(), 'fal-sim-'));
fs.mkdirSync(workdir, { recursive: true });

// Knobs, changed at run time with POST /_sim/config.
const defaults = () => ({
	locked: false,
	queue_s: opts.mode === 'realistic' ? 3 : 0.05,	// time IN_QUEUE
	processing_s: opts.mode === 'realistic' ? 60 : 0.3,	// time IN_PROGRESS
	// faults: {class: [{status, p, count, drop, stall_s, malformed}]} for classes
	// submit, status, result, cancel, initiate, upload, cdn
	faults: {},
	fail_jobs: 0,					// the next N jobs fail at completion (422 content policy)
});
let knobs = defaults();
let rng = mulberry32(opts.seed);
const jobs = new Map();			// request id -> job
const uploads = new Map();		// token -> {id, name, type}
const files = new Map();		// "id/name" -> {path, type}
let ledger = [];
let requests = [];
let base = '';

function mulberry32(a) {
	return () => {
		a |= 0; a = a + 0x6D2B79F5 | 0;
		let t = Math.imul(a ^ a >>> 15, 1 | a);
		t = t + Math.imul(t ^ t >>> 7, 61 | t) ^ t;
		return ((t ^ t >>> 14) >>> 0) / 4294967296;
	};
}

const PRICES = {		// cents per second: without audio, with audio
	'fal-ai/kling-video/v2.6/pro/image-to-video': [7, 14],
	'fal-ai/kling-video/v2.1/pro/image-to-video': [9, 9],
};

function send(res, status, body, headers = {}) {
	const text = typeof body === 'string' ? body : JSON.stringify(body);
	res.writeHead(status, Object.assign({ 'content-type': 'application/json',
		'content-length': Buffer.byteLength(text), 'x-fal-request-id': headers['x-fal-request-id'] || crypto.randomUUID() }, headers));
	res.end(text);
}

// Applies an injected fault for a class of endpoint; true when it answered.
function fault(cls, req, res, onAccepted) {
	const list = knobs.faults[cls] || [];
	for (const f of list) {
		let hit = false;
		if (f.count > 0) { f.count--; hit = true; }
		else if (f.p && rng() < f.p) hit = true;
		if (!hit) continue;
		if (f.accept_then_drop && onAccepted) { onAccepted(); req.socket.destroy(); return true; }
		if (f.drop) { req.socket.destroy(); return true; }
		if (f.stall_s) { setTimeout(() => req.socket.destroy(), f.stall_s * 1000); return true; }
		if (f.malformed) { send(res, 200, '{"status": "IN_QU'); return true; }
		if (f.truncated) {
			// Promise a longer body than is sent, then reset the connection.
			res.writeHead(200, { 'content-type': 'application/json', 'content-length': 400 });
			res.write('{"status": "COMPLETED", "request_id": "');
			setTimeout(() => req.socket.destroy(), 10);
			return true;
		}
		const headers = {};
		if (f.retry_after !== undefined) headers['retry-after'] = String(f.retry_after);
		if (f.status === 502) {
			const html = '<html><body><h1>502 Bad Gateway</h1></body></html>';
			res.writeHead(502, { 'content-type': 'text/html', 'content-length': html.length });
			res.end(html);
			return true;
		}
		send(res, f.status || 500, { detail: f.detail || `injected ${f.status || 500}`, error_type: 'injected' }, headers);
		return true;
	}
	return false;
}

function authorized(req, res) {
	const h = req.headers.authorization;
	if (!h) { send(res, 401, { detail: 'Authorization header is required' }); return false; }
	if (h !== `Key ${opts.key}`) { send(res, 401, { detail: 'No user found for Key ID and Secret' }); return false; }
	return true;
}

function readBody(req) {
	return new Promise((resolve) => {
		const chunks = [];
		req.on('data', (c) => chunks.push(c));
		req.on('end', () => resolve(Buffer.concat(chunks)));
		req.on('error', () => resolve(Buffer.alloc(0)));
	});
}

// Fetches an input image: our own CDN, a data: URL, or a loopback URL.
function fetchImage(url) {
	return new Promise((resolve) => {
		if (typeof url !== 'string') return resolve(null);
		const m = url.startsWith(base + '/cdn/files/') ? url.slice((base + '/cdn/files/').length) : null;
		if (m && files.has(m)) return resolve(fs.readFileSync(files.get(m).path));
		if (url.startsWith('data:')) {
			const comma = url.indexOf(',');
			return resolve(comma > 0 ? Buffer.from(url.slice(comma + 1), 'base64') : null);
		}
		let u;
		try { u = new URL(url); } catch (e) { return resolve(null); }
		if (u.protocol !== 'http:' || !/^(127\.|localhost$|\[::1\]$)/.test(u.hostname)) return resolve(null);
		http.get(url, (r) => {
			if (r.statusCode !== 200) { r.resume(); return resolve(null); }
			const chunks = [];
			r.on('data', (c) => chunks.push(c));
			r.on('end', () => resolve(Buffer.concat(chunks)));
		}).on('error', () => resolve(null));
	});
}

// Makes the output MP4 of a job: a slow zoom over the start image (or a
// test pattern), exactly `duration` seconds, 24 fps, with an AAC track when
// audio is asked for.  Deterministic for the same inputs; cached.
const cache = new Map();
function makeVideo(image, duration, audio) {
	const digest = crypto.createHash('sha256').update(image || 'pattern').digest('hex').slice(0, 16);
	const key = `${digest}-${duration}-${audio ? 'a' : 's'}-${opts.videoSize}`;
	if (cache.has(key)) return cache.get(key);
	const out = path.join(workdir, `out-${key}.mp4`);
	const p = new Promise((resolve, reject) => {
		if (fs.existsSync(out)) return resolve(out);
		const [w, h] = opts.videoSize.split('x').map(Number);
		const frames = duration * 24;
		const args = ['-y', '-loglevel', 'error'];
		if (image) {
			const img = path.join(workdir, `in-${digest}`);
			fs.writeFileSync(img, image);
			args.push('-loop', '1', '-framerate', '24', '-t', String(duration), '-i', img);
		} else {
			args.push('-f', 'lavfi', '-i', `testsrc2=s=${w}x${h}:r=24:d=${duration}`);
		}
		if (audio) args.push('-f', 'lavfi', '-i', `sine=f=330:d=${duration}:sample_rate=48000`);
		const vf = image
			? `scale=${w * 2}:${h * 2}:force_original_aspect_ratio=increase,crop=${w * 2}:${h * 2},zoompan=z='1+0.1*on/${frames}':d=1:s=${w}x${h}:fps=24,format=yuv420p`
			: 'format=yuv420p';
		args.push('-vf', vf, '-frames:v', String(frames), '-c:v', 'libx264', '-preset', 'ultrafast',
			'-threads', '1', '-fflags', '+bitexact', '-flags:v', '+bitexact');
		if (audio) args.push('-c:a', 'aac', '-b:a', '96k', '-ac', '2', '-flags:a', '+bitexact', '-shortest');
		args.push('-movflags', '+faststart', out);
		execFile('ffmpeg', args, (err, stdout, stderr) => err ? reject(new Error(stderr || err.message)) : resolve(out));
	});
	cache.set(key, p);
	p.catch(() => cache.delete(key));
	return p;
}

// Validates a Kling input per model version: a list of 422 details or [].
function validate(endpoint, input) {
	const d = [];
	const v21 = /\/v(1|2\.0|2\.1)\//.test(endpoint);
	const img = v21 ? 'image_url' : 'start_image_url';
	if (typeof input.prompt !== 'string' || input.prompt.length < 1 || input.prompt.length > 2500)
		d.push({ loc: ['body', 'prompt'], msg: 'prompt must be 1 to 2500 characters', type: 'value_error' });
	if (typeof input[img] !== 'string')
		d.push({ loc: ['body', img], msg: 'field required', type: 'missing' });
	for (const bad of v21 ? ['start_image_url', 'end_image_url', 'generate_audio'] : ['image_url', 'tail_image_url', 'cfg_scale'])
		if (bad in input) d.push({ loc: ['body', bad], msg: `extra field not permitted for ${endpoint}`, type: 'extra_forbidden' });
	if (!['5', '10'].includes(input.duration))
		d.push({ loc: ['body', 'duration'], msg: "duration must be the string '5' or '10'", type: 'enum' });
	if (!v21 && 'generate_audio' in input && typeof input.generate_audio !== 'boolean')
		d.push({ loc: ['body', 'generate_audio'], msg: 'must be a boolean', type: 'bool_type' });
	return d;
}

function jobUrls(job) {
	const r = `${base}/queue/${job.app}/requests/${job.id}`;
	return { response_url: r, status_url: `${r}/status`, cancel_url: `${r}/cancel` };
}

function state(job) {
	if (job.done) return 'COMPLETED';
	const t = (Date.now() - job.created) / 1000 / opts.timeScale;
	if (t < knobs.queue_s) return 'IN_QUEUE';
	if (t < knobs.queue_s + knobs.processing_s || !job.output) return 'IN_PROGRESS';
	job.done = true;
	return 'COMPLETED';
}

async function submit(req, res, owner, rest) {
	if (!authorized(req, res)) return;
	const raw = await readBody(req);
	if (knobs.locked) return send(res, 403, { detail: 'User is locked. Reason: Exhausted balance. Top up your balance at fal.ai/dashboard/billing.' });
	let input;
	try { input = JSON.parse(raw.toString('utf8')); } catch (e) {
		return send(res, 422, { detail: [{ loc: ['body'], msg: 'Input should be a valid JSON object', type: 'json_invalid' }] });
	}
	const endpoint = [owner, ...rest].join('/');
	const app = owner === 'workflows' || owner === 'comfy' ? [owner, ...rest.slice(0, 2)].join('/') : `${owner}/${rest[0]}`;
	const id = crypto.randomUUID();
	const job = { id, app, endpoint, input, created: Date.now(), done: false, output: null, error: null };
	const accept = () => {
		jobs.set(id, job);
		const seconds = Number(input.duration) || 5;
		const price = PRICES[endpoint] || [7, 14];
		ledger.push({ request_id: id, endpoint, seconds, audio: input.generate_audio === true,
			cents: seconds * price[input.generate_audio === true ? 1 : 0], at: new Date().toISOString() });
		const problems = validate(endpoint, input);
		if (problems.length) { job.error = { status: 422, body: { detail: problems } }; job.output = true; return; }
		if (knobs.fail_jobs > 0) {
			knobs.fail_jobs--;
			job.error = { status: 422, body: { detail: [{ loc: ['body', 'prompt'], msg: 'The content could not be processed because it violated our content policy', type: 'content_policy_violation' }] } };
			job.output = true;
			return;
		}
		fetchImage(input.start_image_url || input.image_url).then((image) => {
			if (image === null && (input.start_image_url || input.image_url)) {
				job.error = { status: 422, body: { detail: [{ loc: ['body', 'start_image_url'], msg: 'Could not download the file from the given URL', type: 'file_download_error' }] } };
				job.output = true;
				return null;
			}
			return makeVideo(image, Number(input.duration) || 5, input.generate_audio === true).then((file) => {
				const fid = crypto.randomUUID();
				files.set(`${fid}/output.mp4`, { path: file, type: 'video/mp4' });
				job.output = { video: { url: `${base}/cdn/files/${fid}/output.mp4`, content_type: 'video/mp4',
					file_name: 'output.mp4', file_size: fs.statSync(file).size } };
			});
		}).catch((err) => {
			job.error = { status: 500, body: { detail: `generation failed: ${err.message}`, error_type: 'runner_disconnected' } };
			job.output = true;
		});
	};
	if (fault('submit', req, res, accept)) return;
	accept();
	send(res, 200, Object.assign({ status: 'IN_QUEUE', request_id: id }, jobUrls(job), { queue_position: 0 }),
		{ 'x-fal-request-id': id });
}

function findJob(req, res, app, id) {
	const job = jobs.get(id);
	if (!job || job.app !== app) { send(res, 404, { detail: 'Request not found' }); return null; }
	return job;
}

function status(req, res, app, id) {
	if (!authorized(req, res)) return;
	if (fault('status', req, res)) return;
	const job = findJob(req, res, app, id);
	if (!job) return;
	const st = state(job);
	const body = Object.assign({ status: st, request_id: id }, jobUrls(job));
	if (st === 'IN_QUEUE') return send(res, 202, Object.assign(body, { queue_position: 0 }));
	body.logs = null;
	if (st === 'IN_PROGRESS') return send(res, 202, body);
	body.metrics = { inference_time: knobs.processing_s };
	if (job.error) { body.error = 'Generation failed'; body.error_type = job.cancelled ? 'client_cancelled' : 'model_error'; }
	send(res, 200, body, { 'x-fal-request-id': id });
}

function result(req, res, app, id) {
	if (!authorized(req, res)) return;
	if (fault('result', req, res)) return;
	const job = findJob(req, res, app, id);
	if (!job) return;
	if (state(job) !== 'COMPLETED') return send(res, 400, { detail: 'Request is still in progress' });
	if (job.error) return send(res, job.error.status, job.error.body, { 'x-fal-request-id': id });
	send(res, 200, job.output, { 'x-fal-request-id': id });
}

function cancel(req, res, app, id) {
	if (!authorized(req, res)) return;
	if (fault('cancel', req, res)) return;
	const job = jobs.get(id);
	if (!job || job.app !== app) return send(res, 404, { status: 'NOT_FOUND' });
	if (state(job) === 'COMPLETED') return send(res, 400, { status: 'ALREADY_COMPLETED' });
	job.cancel_requested = true;
	if (state(job) === 'IN_QUEUE') {
		job.done = true; job.cancelled = true; job.output = true;
		job.error = { status: 499, body: { detail: 'Request was cancelled by the client', error_type: 'client_cancelled' } };
	}
	send(res, 202, { status: 'CANCELLATION_REQUESTED' });
}

async function initiate(req, res) {
	if (!authorized(req, res)) return;
	const raw = await readBody(req);
	if (fault('initiate', req, res)) return;
	if (knobs.locked) return send(res, 403, { detail: 'User is locked. Reason: Exhausted balance. Top up your balance at fal.ai/dashboard/billing.' });
	let b;
	try { b = JSON.parse(raw.toString('utf8')); } catch (e) { return send(res, 422, { detail: 'invalid JSON' }); }
	const token = crypto.randomBytes(12).toString('hex');
	const id = crypto.randomUUID();
	const name = String(b.file_name || `${Date.now()}.bin`).replace(/[^A-Za-z0-9._-]/g, '_');
	uploads.set(token, { id, name, type: b.content_type || 'application/octet-stream' });
	send(res, 200, { upload_url: `${base}/cdn/upload/${token}`, file_url: `${base}/cdn/files/${id}/${name}` });
}

async function upload(req, res, token) {
	const body = await readBody(req);
	if (fault('upload', req, res)) return;
	const u = uploads.get(token);
	if (!u) return send(res, 403, { detail: 'upload URL expired or already used' });
	uploads.delete(token);
	const file = path.join(workdir, `upload-${u.id}`);
	fs.writeFileSync(file, body);
	files.set(`${u.id}/${u.name}`, { path: file, type: req.headers['content-type'] || u.type });
	send(res, 200, {});
}

function cdn(req, res, rel) {
	if (fault('cdn', req, res)) return;
	const f = files.get(rel);
	if (!f) return send(res, 404, { detail: 'Not found' });
	const st = fs.statSync(f.path);
	res.writeHead(200, { 'content-type': f.type, 'content-length': st.size });
	fs.createReadStream(f.path).pipe(res);
}

async function control(req, res, what) {
	if (what === 'ledger') return send(res, 200, ledger);
	if (what === 'requests') return send(res, 200, requests);
	if (what === 'reset') { knobs = defaults(); ledger = []; requests = []; jobs.clear(); rng = mulberry32(opts.seed); return send(res, 200, {}); }
	if (what === 'config' && req.method === 'POST') {
		const raw = await readBody(req);
		try { Object.assign(knobs, JSON.parse(raw.toString('utf8'))); } catch (e) { return send(res, 400, { detail: 'invalid JSON' }); }
		return send(res, 200, knobs);
	}
	if (what === 'config') return send(res, 200, knobs);
	send(res, 404, { detail: 'unknown control endpoint' });
}

const server = http.createServer((req, res) => {
	const url = new URL(req.url, 'http://sim');
	const parts = url.pathname.split('/').filter(Boolean).map(decodeURIComponent);
	if (parts[0] !== '_sim' && requests.length < 100000)
		requests.push({ method: req.method, path: url.pathname, at: Date.now(),
			auth: (req.headers.authorization || '').slice(0, 4) });
	try {
		if (parts[0] === '_sim') return control(req, res, parts[1]);
		if (parts[0] === 'rest' && req.method === 'POST' && parts[1] === 'storage' && parts[2] === 'upload' && parts[3] === 'initiate')
			return initiate(req, res);
		if (parts[0] === 'cdn' && parts[1] === 'upload' && req.method === 'PUT') return upload(req, res, parts[2]);
		if (parts[0] === 'cdn' && parts[1] === 'files' && req.method === 'GET') return cdn(req, res, parts.slice(2).join('/'));
		if (parts[0] === 'queue') {
			const q = parts.slice(1);
			const ns = q[0] === 'workflows' || q[0] === 'comfy' ? 3 : 2;
			const app = q.slice(0, ns).join('/');
			if (q[ns] === 'requests' && q[ns + 1]) {
				const id = q[ns + 1];
				const tail = q[ns + 2];
				if (req.method === 'GET' && tail === 'status') return status(req, res, app, id);
				if (req.method === 'GET' && (tail === undefined || tail === 'response')) return result(req, res, app, id);
				if (req.method === 'PUT' && tail === 'cancel') return cancel(req, res, app, id);
			}
			if (req.method === 'POST' && q.length >= 2) return submit(req, res, q[0], q.slice(1));
		}
		send(res, 404, { detail: 'Not Found' });
	} catch (err) {
		send(res, 500, { detail: `simulator error: ${err.message}` });
	}
});
server.keepAliveTimeout = 30000;
server.listen(opts.port, '127.0.0.1', () => {
	base = `http://127.0.0.1:${server.address().port}`;
	process.stdout.write(JSON.stringify({ listening: base }) + '\n');
});
process.on('SIGTERM', () => process.exit(0));
process.on('SIGINT', () => process.exit(0));
