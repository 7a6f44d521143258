// Helpers shared by the peers' self-tests, selftest.mjs (provider.mjs) and
// upstream-selftest.mjs (upstream.mjs):
//
//   check(), finish()      ok/FAIL lines, the `N passed, N failed` summary, exit code
//   startPeer()            spawn a peer, wait for its ready line, stop it with SIGTERM
//   CookieJar, follow()    a test HTTP client: manual redirects, path-aware cookies
//   REDIRECT, b64u, postJson
//
// Checks are counted in this module, so a process runs one self-test.

import { spawn } from 'node:child_process';
import { once } from 'node:events';

// The redirect_uri of the self-tests' clients; follow() never fetches it.
export const REDIRECT = 'http://127.0.0.1:9/cb';

export const b64u = (buf) => Buffer.from(buf).toString('base64url');

// ---------------------------------------------------------------- checks ---

let passed = 0;
let failed = 0;

export function check(name, condition, detail) {
  if (condition) {
    passed += 1;
    console.log(`ok   - ${name}`);
  } else {
    failed += 1;
    console.log(`FAIL - ${name}${detail === undefined ? '' : `: ${typeof detail === 'string' ? detail : JSON.stringify(detail)}`}`);
  }
}

// Prints the peer's stderr (on a failure, or with SELFTEST_VERBOSE set) and
// the summary line, and sets the exit code (1 on any failure).
export function finish(peer) {
  if (failed || process.env.SELFTEST_VERBOSE) console.log(`--- ${peer.name} stderr ---\n${peer.stderr}`);
  console.log(`${passed} passed, ${failed} failed`);
  process.exitCode = failed ? 1 : 0;
}

// ------------------------------------------------------------------ peer ---

// Spawns `node <path>` with `env` added to this process's environment.
// `name` ("provider", "peer") appears in check names and messages.
export function startPeer(path, env, name) {
  const child = spawn(process.execPath, [path], {
    env: { ...process.env, ...env },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let stdout = '';
  let stderr = '';
  child.stdout.on('data', (d) => { stdout += d; });
  child.stderr.on('data', (d) => { stderr += d; });
  const exited = once(child, 'exit');

  return {
    name,
    child,
    get stderr() {
      return stderr;
    },

    // Waits (15 s at most) for the ready line, checks its shape and
    // GET /_test/health; returns the issuer.
    async ready() {
      const deadline = Date.now() + 15_000;
      while (!stdout.includes('\n')) {
        if (Date.now() > deadline || child.exitCode !== null) throw new Error(`${name} did not become ready\n${stderr}`);
        await new Promise((r) => { setTimeout(r, 25); });
      }
      const readyLine = stdout.split('\n')[0];
      const { issuer } = JSON.parse(readyLine);
      check('ready line shape', readyLine === JSON.stringify({ ready: true, issuer }) && /^http:\/\/127\.0\.0\.1:\d+$/.test(issuer), readyLine);
      check('GET /_test/health is 200', (await fetch(`${issuer}/_test/health`)).status === 200);
      return issuer;
    },

    // SIGTERM; checks exit code 0 and that stdout held the ready line only.
    async stop() {
      child.kill('SIGTERM');
      const [code, signal] = await exited;
      check(`${name} exits 0 on SIGTERM`, code === 0, { code, signal });
      check('stdout holds exactly the ready line', stdout.split('\n').filter(Boolean).length === 1, stdout);
    },
  };
}

// ------------------------------------------------------------ cookie jar ---

export class CookieJar {
  #cookies = new Map(); // `${name};${path}` -> { name, value, path }

  store(url, response) {
    for (const line of response.headers.getSetCookie()) {
      const [pair, ...attrs] = line.split(';').map((s) => s.trim());
      const eq = pair.indexOf('=');
      const name = pair.slice(0, eq);
      const value = pair.slice(eq + 1);
      let path = '/';
      let expired = value === '';
      for (const attr of attrs) {
        const [k, v = ''] = attr.split('=');
        if (k.toLowerCase() === 'path') path = v;
        if (k.toLowerCase() === 'expires' && Date.parse(v) <= Date.now()) expired = true;
        if (k.toLowerCase() === 'max-age' && Number(v) <= 0) expired = true;
        if (k.toLowerCase() === 'secure' && new URL(url).protocol === 'http:') {
          throw new Error(`cookie ${name} is Secure on plain http`);
        }
      }
      const key = `${name};${path}`;
      if (expired) this.#cookies.delete(key);
      else this.#cookies.set(key, { name, value, path });
    }
  }

  header(url) {
    const { pathname } = new URL(url);
    return [...this.#cookies.values()]
      .filter((c) => pathname === c.path || pathname.startsWith(c.path.endsWith('/') ? c.path : `${c.path}/`))
      .map((c) => `${c.name}=${c.value}`)
      .join('; ');
  }

  names() {
    return [...this.#cookies.values()].map((c) => `${c.name}@${c.path}`);
  }
}

// --------------------------------------------------------------- http ---

// GETs `url` and follows redirects (cookies from `jar`) until one points at
// REDIRECT (never fetched; answered as { redirect: URL }) or satisfies
// `stopAt(url)` likewise, or a non-redirect response arrives ({ final, url,
// body }). `hops` lists "<status> <path>" per request, `statuses` the statuses.
export async function follow(jar, url, { stopAt } = {}) {
  const hops = [];
  const statuses = [];
  let current = url;
  for (let i = 0; i < 20; i += 1) {
    const headers = {};
    const cookie = jar.header(current);
    if (cookie) headers.cookie = cookie;
    const res = await fetch(current, { redirect: 'manual', headers });
    jar.store(current, res);
    hops.push(`${res.status} ${new URL(current).pathname}`);
    statuses.push(res.status);
    const location = res.headers.get('location');
    if (res.status < 300 || res.status >= 400 || !location) {
      return { final: res, hops, statuses, url: current, body: await res.text() };
    }
    const next = new URL(location, current).href;
    await res.arrayBuffer();
    if (next.startsWith(REDIRECT) || (stopAt && stopAt(next))) return { redirect: new URL(next), hops, statuses };
    current = next;
  }
  throw new Error('too many redirects');
}

export async function postJson(url, body) {
  const res = await fetch(url, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify(body ?? {}) });
  return { status: res.status, json: await res.json() };
}
