// The issuance benchmark's peer: oidc-provider in one Node process, issuing EdDSA-signed JWT access
// tokens for the client_credentials grant and storing nothing (JWT access tokens are not written to
// the adapter; the default in-memory adapter is left in place for everything else).
//
//   node server.mjs [port]
//
// Settings from the environment:
//   PEER_PORT           port on 127.0.0.1 when no argument is given (default 3000)
//   PEER_CLIENT_ID      the confidential client's id (default bench)
//   PEER_CLIENT_SECRET  its secret, sent with client_secret_basic (required)
//   PEER_RESOURCE       the default resource indicator (default urn:chit:bench:image-store)
//   PEER_SCOPE          the scope the resource server offers (default images:read)
//
// A fresh Ed25519 key is generated at every start. Nothing is logged per request.

import { generateKeyPairSync } from 'node:crypto';
import Provider from 'oidc-provider';

const HOST = '127.0.0.1';
const port = Number(process.argv[2] ?? process.env.PEER_PORT ?? 3000);
const clientId = process.env.PEER_CLIENT_ID || 'bench';
const clientSecret = process.env.PEER_CLIENT_SECRET;
const resource = process.env.PEER_RESOURCE || 'urn:chit:bench:image-store';
const scope = process.env.PEER_SCOPE || 'images:read';

if (!Number.isInteger(port) || port < 1 || port > 65535) {
  console.error(`invalid port: ${process.argv[2] ?? process.env.PEER_PORT}`);
  process.exit(2);
}
if (!clientSecret) {
  console.error('PEER_CLIENT_SECRET is required');
  process.exit(2);
}

const { privateKey } = generateKeyPairSync('ed25519');
const signingKey = { ...privateKey.export({ format: 'jwk' }), kid: 'bench-ed25519', use: 'sig', alg: 'EdDSA' };

const provider = new Provider(`http://${HOST}:${port}`, {
  clients: [
    {
      client_id: clientId,
      client_secret: clientSecret,
      grant_types: ['client_credentials'],
      response_types: [],
      redirect_uris: [],
      token_endpoint_auth_method: 'client_secret_basic',
      scope,
    },
  ],
  // RS256 by default; the provider requires the client's ID token alg to match a key in the JWKS.
  clientDefaults: { id_token_signed_response_alg: 'EdDSA' },
  jwks: { keys: [signingKey] },
  scopes: [scope],
  features: {
    devInteractions: { enabled: false },
    clientCredentials: { enabled: true },
    resourceIndicators: {
      enabled: true,
      // Without a resource parameter, client_credentials tokens are for this resource server.
      defaultResource: (_ctx, _client, oneOf) => oneOf ?? resource,
      getResourceServerInfo: () => ({
        scope,
        audience: resource,
        accessTokenFormat: 'jwt',
        accessTokenTTL: 3600,
        jwt: { sign: { alg: 'EdDSA' } },
      }),
      useGrantedResource: () => true,
    },
  },
});
provider.proxy = false;

const server = provider.listen(port, HOST, () => {
  console.log(`oidc-provider ${provider.issuer} ready (pid ${process.pid})`);
});

for (const signal of ['SIGTERM', 'SIGINT']) {
  process.on(signal, () => {
    server.close();
    server.closeAllConnections?.();
    process.exit(0);
  });
}
