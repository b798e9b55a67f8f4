// What the fake model makes of a photo: the camera move the prompt asks for,
// a move from the start photo into a different end photo, a quiet room tone
// with audio on, 1280x720 by default and Kling-like 1080p clips on demand.
// Frames are compared with photos by SSIM (ffmpeg's ssim filter).
'use strict';
const test = require('node:test');
const assert = require('node:assert/strict');
const path = require('path');
const fs = require('fs');
const os = require('os');
const { execFileSync, spawnSync } = require('child_process');
const C = require('../common');
const { motionOf } = require('../motion');

const FAL = path.join(__dirname, '..', 'fal_sim.js');
const KEY = { authorization: 'Key kid:secret' };
const APP = '/fal-ai/kling-video';
const V26 = `${APP}/v2.6/pro/image-to-video`;
const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'motion-test-'));
let fal;

// A photo with something to see: left half red, right half blue, a white
// square in the middle, a grey band at the top.
const PHOTO = path.join(tmp, 'photo.png');
const OTHER = path.join(tmp, 'other.png');
execFileSync('ffmpeg', ['-v', 'error', '-f', 'lavfi', '-i', 'color=c=red:s=640x360', '-vf',
	'drawbox=x=320:y=0:w=320:h=360:color=blue:t=fill,drawbox=x=260:y=130:w=120:h=100:color=white:t=fill,drawbox=x=0:y=0:w=640:h=40:color=gray:t=fill',
	'-frames:v', '1', PHOTO]);
execFileSync('ffmpeg', ['-v', 'error', '-f', 'lavfi', '-i', 'testsrc2=s=640x360', '-frames:v', '1', OTHER]);
const dataUrl = (f) => `data:image/png;base64,${fs.readFileSync(f).toString('base64')}`;

async function clip(input, knobs = {}) {
	await C.request('POST', `${fal.base}/_sim/config`, { body: Object.assign({ queue_s: 0, processing_s: 0, video_size: null }, knobs) });
	const s = await C.request('POST', `${fal.base}/queue${V26}`, { headers: KEY,
		body: Object.assign({ start_image_url: dataUrl(PHOTO), duration: '5', generate_audio: false }, input) });
	for (const end = Date.now() + 60000; Date.now() < end;) {
		const st = await C.request('GET', `${fal.base}/queue${APP}/requests/${s.json.request_id}/status`, { headers: KEY });
		if (st.json.status === 'COMPLETED') break;
		await new Promise((r) => setTimeout(r, 20));
	}
	const r = await C.request('GET', `${fal.base}/queue${APP}/requests/${s.json.request_id}`, { headers: KEY });
	assert.equal(r.status, 200, r.text);
	const file = path.join(tmp, `${s.json.request_id}.mp4`);
	fs.writeFileSync(file, (await C.request('GET', r.json.video.url)).body);
	return file;
}

// SSIM of a clip's frame (at s seconds, or 'last') against an image, both
// scaled to 160x90 grey; `crop` takes part of the image first ("w:h:x:y").
function ssim(file, at, image, crop) {
	const seek = at === 'last' ? ['-sseof', '-0.1'] : ['-ss', String(at)];
	const r = spawnSync('ffmpeg', ['-v', 'info', ...seek, '-i', file, '-i', image, '-lavfi',
		`[0:v]scale=160:90,format=gray[a];[1:v]${crop ? `crop=${crop},` : ''}scale=160:90,format=gray[b];[a][b]ssim`,
		'-frames:v', '1', '-f', 'null', '-'], { encoding: 'utf8' });
	return Number(/All:([0-9.]+)/.exec(r.stderr)[1]);
}

function probe(file) {
	return JSON.parse(execFileSync('ffprobe', ['-v', 'error', '-show_entries',
		'format=duration,size:stream=codec_type,codec_name,profile,width,height,r_frame_rate,has_b_frames,color_primaries,sample_rate,channels',
		'-of', 'json', file]));
}

test.before(async () => {
	const env = Object.assign({}, process.env);
	delete env.HAGEN_SIM_VIDEO_SIZE;
	fal = await C.spawnSim(FAL, ['--key', 'kid:secret'], { env });
});
test.after(async () => { await fal.stop(); fs.rmSync(tmp, { recursive: true, force: true }); });

test('the camera move is read from the prompt\'s words', () => {
	const cases = [
		['Slow cinematic push-in toward the front of the house', 'push_in', 1, 0.8],
		['Slow smooth dolly forward through the living room', 'push_in', 1, 0.8],
		['Slow pull-back revealing the whole backyard', 'pull_back', 1, 0.8],
		['Wide slow pan across the backyard revealing the lawn', 'pan', 1, 0.8],
		['Quick pan left over the kitchen', 'pan', -1, 1.6],
		['Slow glide to the left along the kitchen island', 'pan', -1, 0.8],
		['Slow upward tilt and glide following the staircase', 'tilt', -1, 0.8],
		['Tilt down to the pool', 'tilt', 1, 1],
		['Gentle arc around the seating area', 'orbit', 1, 0.8],
		['Static shot, no camera movement', 'static', 1, 1],
		['A beautiful modern kitchen', 'push_in', 1, 1],
		['', 'push_in', 1, 1],
	];
	for (const [prompt, move, direction, speed] of cases) {
		assert.deepEqual(motionOf(prompt), { move, direction, speed }, prompt);
	}
});

test('1280x720 by default; the clip starts on the photo and moves as asked', async () => {
	const push = await clip({ prompt: 'Slow push-in toward the white square' });
	const info = probe(push);
	const v = info.streams.find((s) => s.codec_type === 'video');
	assert.deepEqual([v.width, v.height, v.r_frame_rate], [1280, 720, '24/1']);
	assert.equal(Number(info.format.duration), 5);
	assert.ok(ssim(push, 0, PHOTO) > 0.95, 'a push-in starts on the photo');
	// its last frame is the middle of the photo, enlarged
	const centre = ssim(push, 'last', PHOTO, 'iw/1.128:ih/1.128:(iw-ow)/2:(ih-oh)/2');
	assert.ok(centre > 0.9 && centre > ssim(push, 'last', PHOTO) + 0.05, `push-in ends on the centre (${centre})`);
	const pull = await clip({ prompt: 'Slow pull-back from the white square' }, { video_size: 'small' });
	assert.ok(ssim(pull, 'last', PHOTO) > 0.95, 'a pull-back ends on the photo');
	assert.ok(ssim(pull, 0, PHOTO) < ssim(pull, 'last', PHOTO) - 0.05, 'and starts closer in');
	// pans end on the side they go to
	const left = await clip({ prompt: 'pan left' }, { video_size: 'small' });
	const right = await clip({ prompt: 'pan right' }, { video_size: 'small' });
	const leftPart = 'iw/1.16:ih/1.16:0:(ih-oh)/2', rightPart = 'iw/1.16:ih/1.16:iw-ow:(ih-oh)/2';
	assert.ok(ssim(left, 'last', PHOTO, leftPart) > 0.9 && ssim(left, 'last', PHOTO, leftPart) > ssim(left, 'last', PHOTO, rightPart) + 0.05, 'pan left ends on the left');
	assert.ok(ssim(right, 'last', PHOTO, rightPart) > 0.9 && ssim(right, 'last', PHOTO, rightPart) > ssim(right, 'last', PHOTO, leftPart) + 0.05, 'pan right ends on the right');
	assert.ok(ssim(left, 0, PHOTO, rightPart) > ssim(left, 0, PHOTO, leftPart), 'and pan left starts on the right');
});

test('a different end image: the clip moves from the first photo into the second', async () => {
	const f = await clip({ prompt: 'moving towards the next room', end_image_url: dataUrl(OTHER) }, { video_size: 'small' });
	assert.ok(ssim(f, 0, PHOTO) > 0.95, 'starts on the first photo');
	assert.ok(ssim(f, 'last', OTHER) > 0.95, 'ends on the second');
	assert.ok(ssim(f, 'last', PHOTO) < 0.6 && ssim(f, 0, OTHER) < 0.6);
	assert.equal(Number(probe(f).format.duration), 5);
	// the same end image as the start: an ordinary clip
	const same = await clip({ prompt: 'slow push-in', end_image_url: dataUrl(PHOTO) }, { video_size: 'small' });
	assert.ok(ssim(same, 'last', PHOTO, 'iw/1.128:ih/1.128:(iw-ow)/2:(ih-oh)/2') > 0.9);
});

test('native audio is a quiet room tone; without it there is no audio track', async () => {
	const level = (file) => Number(/RMS level dB: (-?[0-9.]+)/.exec(spawnSync('ffmpeg', ['-v', 'info', '-i', file, '-af',
		'astats=measure_overall=RMS_level:measure_perchannel=0', '-f', 'null', '-'], { encoding: 'utf8' }).stderr)[1]);
	for (const prompt of ['Slow push-in toward the bed', 'Slow pan across the garden, birdsong and a light breeze']) {
		const f = await clip({ prompt, generate_audio: true }, { video_size: 'small' });
		const a = probe(f).streams.find((s) => s.codec_type === 'audio');
		assert.deepEqual([a.codec_name, a.sample_rate, a.channels], ['aac', '48000', 2]);
		const db = level(f);
		assert.ok(db > -55 && db < -35, `${prompt}: ${db} dBFS RMS`);
	}
	const silent = await clip({ prompt: 'Slow push-in', generate_audio: false }, { video_size: 'small' });
	assert.deepEqual(probe(silent).streams.map((s) => s.codec_type), ['video']);
});

test('video_size 1080p gives Kling-like clips: High profile H.264 with B-frames, AAC, 24 fps, 5 s, megabytes of it', async () => {
	const f = await clip({ prompt: 'Slow push-in', generate_audio: true }, { video_size: '1080p' });
	const info = probe(f);
	const v = info.streams.find((s) => s.codec_type === 'video');
	const a = info.streams.find((s) => s.codec_type === 'audio');
	assert.deepEqual([v.codec_name, v.profile, v.width, v.height, v.r_frame_rate, v.color_primaries], ['h264', 'High', 1920, 1080, '24/1', 'bt709']);
	assert.ok(v.has_b_frames > 0);
	assert.deepEqual([a.codec_name, a.sample_rate, a.channels], ['aac', '48000', 2]);
	assert.equal(Number(info.format.duration), 5);
	const mb = Number(info.format.size) / 1e6;
	assert.ok(mb > 3 && mb < 40, `${mb} MB`);	// 12.7 MB for the demo's living room photo, more for these flat colours under grain
});

test('outputs are kept by camera move: the same move is the same file, another move another', async () => {
	const a = await clip({ prompt: 'Slow pan right' }, { video_size: 'small' });
	const r = await C.request('POST', `${fal.base}/_sim/reset`);
	assert.equal(r.status, 200);
	const b = await clip({ prompt: 'Slow pan right over the room' }, { video_size: 'small' });
	const c = await clip({ prompt: 'Slow pan left' }, { video_size: 'small' });
	const sum = (f) => C.sha256(fs.readFileSync(f));
	assert.equal(sum(a), sum(b), 'same photo and move: the same file');
	assert.notEqual(sum(a), sum(c));
});
