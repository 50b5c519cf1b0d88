// A strict, certified OAuth 2 / OIDC authorization server (oidc-provider) for tests.
//
// Usage: node tools/peers/oidc-provider.mjs [PORT]
// Binds 127.0.0.1 (port 0 = any free port), prints its issuer URL as the first stdout
// line, then one JSON line per token grant ({"event":"grant","grant_type":...}) so tests
// can count refreshes at the server. Exits when stdin closes.
//
// Static clients: "rs"/"rs-secret" (a resource server: introspection only),
// "cc-client"/"cc-secret" (client credentials), "pre-client" (public, redirect URI
// http://localhost:3456/api/oauth/callback). Dynamic registration is open. Resource
// indicators are on: every resource gets scopes mcp:read mcp:write mcp:admin and opaque
// access tokens. PKCE is required; dev interactions log anyone in.
import http from 'node:http';
import Provider from 'oidc-provider';

const port = Number(process.argv[2] ?? 0);
const server = http.createServer();
await new Promise((resolve) => server.listen(port, '127.0.0.1', resolve));
const issuer = `http://127.0.0.1:${server.address().port}`;

const provider = new Provider(issuer, {
  clients: [
    { client_id: 'rs', client_secret: 'rs-secret', grant_types: [], response_types: [], redirect_uris: [] },
    {
      client_id: 'cc-client', client_secret: 'cc-secret', grant_types: ['client_credentials'],
      response_types: [], redirect_uris: [],
    },
    {
      client_id: 'pre-client', token_endpoint_auth_method: 'none', application_type: 'native',
      grant_types: ['authorization_code', 'refresh_token'], response_types: ['code'],
      redirect_uris: ['http://localhost:3456/api/oauth/callback'],
    },
  ],
  features: {
    devInteractions: { enabled: true },
    clientCredentials: { enabled: true },
    registration: { enabled: true },
    revocation: { enabled: true },
    introspection: { enabled: true },
    resourceIndicators: {
      enabled: true,
      defaultResource: (ctx, client, oneOf) => oneOf ?? undefined,
      useGrantedResource: () => true,
      getResourceServerInfo: (ctx, resourceIndicator) => ({
        scope: 'mcp:read mcp:write mcp:admin',
        audience: resourceIndicator,
        accessTokenTTL: 3600,
        accessTokenFormat: 'opaque',
      }),
    },
  },
  pkce: { required: () => true },
  scopes: ['openid', 'offline_access'],
  cookies: { keys: ['funnel-test-cookie-key'] },
});

provider.on('grant.success', (ctx) => {
  process.stdout.write(`${JSON.stringify({ event: 'grant', grant_type: ctx.oidc.params.grant_type })}\n`);
});
provider.on('grant.error', (ctx, err) => {
  process.stdout.write(`${JSON.stringify({ event: 'grant_error', grant_type: ctx.oidc.params?.grant_type, error: err.error })}\n`);
});

server.on('request', provider.callback());
process.stdout.write(`${issuer}\n`);

process.stdin.on('end', () => { server.close(); process.exit(0); });
process.stdin.on('close', () => process.exit(0));
process.stdin.resume();
