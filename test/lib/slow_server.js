// A local HTTP server for tests of the dispatchers: it answers every request
// after a delay (--delay-ms, default 200) with 202 {"status":
// "CANCELLATION_REQUESTED"}, and counts the requests it holds at once.
// GET /_stats answers {"served", "max_concurrent"} at once.  Prints
// {"listening": URL} when ready.
'use strict';
const http = require('http');

let delay = 200;
for (let i = 2; i < process.argv.length; i++)
	if (process.argv[i] === '--delay-ms') delay = Number(process.argv[++i]);
const body = JSON.stringify({ status: 'CANCELLATION_REQUESTED' });
let served = 0;
let open = 0;
let max = 0;
const server = http.createServer((req, res) => {
	req.resume();
	req.on('end', () => {
		if (req.url === '/_stats') {
			res.writeHead(200, { 'content-type': 'application/json' });
			res.end(JSON.stringify({ served, max_concurrent: max }));
			return;
		}
		open++;
		if (open > max) max = open;
		setTimeout(() => {
			open--;
			served++;
			res.writeHead(202, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(body) });
			res.end(body);
		}, delay);
	});
});
server.keepAliveTimeout = 60000;
server.listen(0, '127.0.0.1', () => {
	process.stdout.write(JSON.stringify({ listening: `http://127.0.0.1:${server.address().port}` }) + '\n');
});
process.on('SIGTERM', () => process.exit(0));
