// An instant stand-in for Fal.ai and S3 at once, for measuring what the
// engine itself sustains under project load: every answer is immediate and
// tiny, nothing is checked, nothing is stored.  (The simulators in test/sim
// and test/s3 are faithful, and so cost far more CPU per request than the
// dispatcher does: on a 2-core machine they, not the engine, set the pace.)
//
//   node instant_provider.js --video FILE.mp4 [--polls N]
//
// Paths: /photos/* (a JPEG), /rest/storage/upload/initiate, /cdn/upload/*,
// /queue/<model> (submit), /queue/.../requests/<id>/status (IN_QUEUE once,
// IN_PROGRESS N-1 times, then COMPLETED), /queue/.../requests/<id> (the
// result), /files/* (the MP4 given, for every video), /videos/* (S3: any
// PUT stored nowhere, answered with an ETag; a GET gets the MP4).  Prints
// {"listening": URL}; GET /_stats gives the requests served by kind.
'use strict';
const fs = require('fs');
const http = require('http');

const args = process.argv.slice(2);
const opt = (name, dflt) => { const i = args.indexOf(name); return i >= 0 ? args[i + 1] : dflt; };
const video = fs.readFileSync(opt('--video'));
const polls = Number(opt('--polls', '2'));
// A 1x1 JPEG.
const jpeg = Buffer.from('/9j/4AAQSkZJRgABAQEASABIAAD/2wBDAP//////////////////////////////////////////////////////////////////////////////////////wgALCAABAAEBAREA/8QAFBABAAAAAAAAAAAAAAAAAAAAAP/aAAgBAQABPxA=', 'base64');
const seen = new Map();
const stats = {};
let base = '';
let n = 0;

function send(res, status, body, type) {
	const buf = Buffer.isBuffer(body) ? body : Buffer.from(typeof body === 'string' ? body : JSON.stringify(body));
	res.writeHead(status, { 'content-type': type || 'application/json', 'content-length': buf.length, etag: '"e"' });
	res.end(buf);
}

const server = http.createServer((req, res) => {
	req.resume();
	req.on('end', () => {
		const url = new URL(req.url, base);
		const p = url.pathname;
		let kind;
		if (p === '/_stats') return send(res, 200, stats);
		if (p.startsWith('/photos/')) { kind = 'image'; send(res, 200, jpeg, 'image/jpeg'); }
		else if (p.endsWith('/storage/upload/initiate')) {
			kind = 'initiate';
			n++;
			send(res, 200, { upload_url: `${base}/cdn/upload/u${n}`, file_url: `${base}/cdn/files/f${n}.jpg` });
		}
		else if (p.startsWith('/cdn/')) { kind = 'cdn'; send(res, 200, ''); }
		else if (p.startsWith('/files/')) { kind = 'download'; send(res, 200, video, 'video/mp4'); }
		else if (p.startsWith('/videos/')) {
			kind = req.method === 'GET' ? 's3_get' : 's3_put';
			if (req.method === 'GET') send(res, 200, video, 'video/mp4');
			else send(res, 200, '', 'text/plain');
		}
		else if (p.startsWith('/queue/') && req.method === 'POST') {
			kind = 'submit';
			n++;
			const id = `r${n}`;
			const r = `${base}/queue/fal-ai/kling-video/requests/${id}`;
			seen.set(id, 0);
			send(res, 200, { status: 'IN_QUEUE', request_id: id, status_url: `${r}/status`, response_url: r,
				cancel_url: `${r}/cancel`, queue_position: 0 });
		}
		else if (p.startsWith('/queue/') && p.endsWith('/status')) {
			kind = 'poll';
			const id = p.split('/requests/')[1].split('/')[0];
			const k = (seen.get(id) || 0) + 1;
			seen.set(id, k);
			if (k >= polls) {
				seen.delete(id);
				send(res, 200, { status: 'COMPLETED', logs: null, metrics: { inference_time: 0.01 } });
			} else if (k === 1) send(res, 202, { status: 'IN_QUEUE', queue_position: 0 });
			else send(res, 202, { status: 'IN_PROGRESS', logs: null });
		}
		else if (p.startsWith('/queue/') && p.endsWith('/cancel')) { kind = 'cancel'; send(res, 202, { status: 'CANCELLATION_REQUESTED' }); }
		else if (p.startsWith('/queue/')) {
			kind = 'result';
			const id = p.split('/requests/')[1].split('/')[0];
			send(res, 200, { video: { url: `${base}/files/${id}.mp4`, content_type: 'video/mp4' } });
		}
		else { kind = 'unknown'; send(res, 404, { detail: 'not found' }); }
		stats[kind] = (stats[kind] || 0) + 1;
	});
});
server.keepAliveTimeout = 60000;
server.listen(0, '127.0.0.1', () => {
	base = `http://127.0.0.1:${server.address().port}`;
	process.stdout.write(JSON.stringify({ listening: base }) + '\n');
});
process.on('SIGTERM', () => process.exit(0));
