// oauth2-mock-server as a scriptable authorization server for tests.
//
// Usage: node tools/peers/oauth2-mock-server.mjs [PORT]
// Binds 127.0.0.1 (port 0 = any free port), prints its issuer URL as the first stdout
// line, then one JSON line per token request ({"event":"token","grant_type":...}).
// Exits when stdin closes. It approves every authorization request at once.
//
// Each stdin line is a JSON command that shapes the NEXT token responses:
//   {"token_status": 503, "token_body": {...} | "raw text", "count": 1}
// ("count" responses, default 1), answered on stdout with {"event":"ok"}.
import { OAuth2Server } from 'oauth2-mock-server';
import readline from 'node:readline';

const port = Number(process.argv[2] ?? 0);
const server = new OAuth2Server();
await server.issuer.keys.generate('RS256');
await server.start(port, '127.0.0.1');
server.issuer.url = `http://127.0.0.1:${server.address().port}`;

const overrides = [];
server.service.on('beforeResponse', (response, req) => {
  process.stdout.write(`${JSON.stringify({ event: 'token', grant_type: req.body?.grant_type })}\n`);
  const next = overrides.shift();
  if (next) {
    response.statusCode = next.token_status ?? 200;
    response.body = next.token_body;
  }
});

process.stdout.write(`${server.issuer.url}\n`);

const rl = readline.createInterface({ input: process.stdin });
rl.on('line', (line) => {
  if (!line.trim()) return;
  const command = JSON.parse(line);
  for (let i = 0; i < (command.count ?? 1); i += 1) overrides.push(command);
  process.stdout.write(`${JSON.stringify({ event: 'ok' })}\n`);
});
rl.on('close', async () => { await server.stop(); process.exit(0); });
