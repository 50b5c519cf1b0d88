// oauth2-mock-server as a strict, short-lived, scriptable authorization server for soak tests.
//
// Usage: node tools/peers/rotating-as.mjs TOKEN_TTL_SECONDS
// Binds 127.0.0.1 on a free port, prints its issuer URL as the first stdout line, then one
// JSON line per token request: {"event":"token","grant_type":...,"outcome":...} where
// outcome is "ok", "injected" (a scripted failure) or "reuse" (a refresh token presented
// a second time: refused with invalid_grant). Exits when stdin closes.
//
// What it adds to oauth2-mock-server (which approves every authorization at once):
// - access tokens live TOKEN_TTL_SECONDS ("expires_in"), and /introspect says "active"
//   only for tokens it issued that have not expired;
// - refresh tokens rotate and are single-use, as OAuth 2.1 requires for public clients:
//   each refresh returns a new one, and presenting a used one is invalid_grant;
// - stdin commands shape the NEXT token requests, answered with {"event":"ok"}:
//     {"token_status": 503 | 429 | ..., "count": n}   answer with that status, change nothing
//     {"delay_ms": 3000, "count": n}                  hang that long, then 504, change nothing
import http from 'node:http';
import readline from 'node:readline';
import { randomUUID } from 'node:crypto';
import { OAuth2Issuer, OAuth2Service } from 'oauth2-mock-server';

const ttl = Number(process.argv[2] ?? 60);
const issuer = new OAuth2Issuer();
await issuer.keys.generate('RS256');
const service = new OAuth2Service(issuer);

const overrides = [];
const liveRefresh = new Set();
const accessExpiry = new Map();
const emit = (event) => process.stdout.write(`${JSON.stringify(event)}\n`);

service.on('beforeResponse', (response, req) => {
  const grant = req.body?.grant_type;
  if (grant === 'refresh_token') {
    if (!liveRefresh.delete(req.body.refresh_token)) {
      emit({ event: 'token', grant_type: grant, outcome: 'reuse' });
      response.statusCode = 400;
      response.body = { error: 'invalid_grant', error_description: 'refresh token already used' };
      return;
    }
  }
  const accessToken = randomUUID();
  response.body.access_token = accessToken;
  response.body.expires_in = ttl;
  accessExpiry.set(accessToken, Date.now() + ttl * 1000);
  if (response.body.refresh_token) liveRefresh.add(response.body.refresh_token);
  emit({ event: 'token', grant_type: grant, outcome: 'ok' });
});

const readBody = (req) => new Promise((resolve) => {
  let data = '';
  req.on('data', (chunk) => { data += chunk; });
  req.on('end', () => resolve(data));
});

const server = http.createServer(async (req, res) => {
  const path = new URL(req.url, 'http://x').pathname;
  if (req.method === 'POST' && path === '/introspect') {
    const token = new URLSearchParams(await readBody(req)).get('token') ?? '';
    const expiry = accessExpiry.get(token);
    res.setHeader('Content-Type', 'application/json');
    res.end(JSON.stringify(expiry && expiry > Date.now() ? { active: true, scope: 'mcp:read' } : { active: false }));
    return;
  }
  if (req.method === 'POST' && path === '/token' && overrides.length > 0) {
    const next = overrides.shift();
    await readBody(req);
    emit({ event: 'token', grant_type: null, outcome: 'injected' });
    if (next.delay_ms) await new Promise((resolve) => { setTimeout(resolve, next.delay_ms); });
    res.statusCode = next.token_status ?? 504;
    res.setHeader('Content-Type', 'application/json');
    res.end(JSON.stringify({ error: 'temporarily_unavailable' }));
    return;
  }
  service.requestHandler(req, res);
});
await new Promise((resolve) => { server.listen(0, '127.0.0.1', resolve); });
issuer.url = `http://127.0.0.1:${server.address().port}`;
process.stdout.write(`${issuer.url}\n`);

const rl = readline.createInterface({ input: process.stdin });
rl.on('line', (line) => {
  if (!line.trim()) return;
  const command = JSON.parse(line);
  for (let i = 0; i < (command.count ?? 1); i += 1) overrides.push(command);
  emit({ event: 'ok' });
});
rl.on('close', () => { server.closeAllConnections?.(); server.close(); process.exit(0); });
