// A local HTTP server that answers every request at once, for measuring
// the dispatcher's throughput.  Prints {"listening": URL} when ready.
'use strict';
const http = require('http');

const body = JSON.stringify({ status: 'CANCELLATION_REQUESTED' });
let served = 0;
const server = http.createServer((req, res) => {
	req.resume();
	req.on('end', () => {
		served++;
		res.writeHead(202, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(body) });
		res.end(body);
	});
});
server.keepAliveTimeout = 60000;
server.listen(0, '127.0.0.1', () => {
	process.stdout.write(JSON.stringify({ listening: `http://127.0.0.1:${server.address().port}` }) + '\n');
});
process.on('SIGTERM', () => {
	process.stderr.write(`served ${served}\n`);
	process.exit(0);
});
