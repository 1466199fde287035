#!/usr/bin/env node
// Drives headless Chromium (Debian's /usr/bin/chromium) against a meshgate gateway: opens the
// gateway's page, calls window.meshgate.dial() and .echo() in it, prints one JSON line with the
// result and exits 0 when the echo came back identical (SHA-256 compared in the page), 1 with the
// error otherwise (also printed as one JSON line: {"ok":false,"error":...}).
//
//   node chromium.cjs --url http://10.77.0.1:8080/ [--bytes N] [--target svc:echo] [--to ID]
//        [--turn turn:IP:3478?transport=udp --turn-user U --turn-pass P] [--relay-only]
//        [--timeout-s 120] [--user-data-dir DIR] [--identity-only] [--secure-origin]
//
// playwright-core (npm, no browser download) comes from NODE_PATH, else from target/npm of this
// checkout: `npm install --prefix target/npm playwright-core@1.65.1` (scripts/test.sh does it).
// Chromium is started by us, not by playwright, so that the flags are exactly these (peers.md);
// playwright only attaches over CDP (connectOverCDP). --user-data-dir keeps the browser's
// identity (IndexedDB) between runs; without it a temp dir is used and removed.
//
// Run it inside the test's network namespace (`ip netns exec NS node chromium.cjs ...`): on the
// host Chromium would offer the machine's real addresses. In a namespace Chromium gathers no host
// candidate unless the namespace has a default route (`ip route add default dev eth0`);
// --disable-features=WebRtcHideLocalIpsWithMdns makes them raw IPs instead of <uuid>.local names.
"use strict";
const fs = require("fs");
const os = require("os");
const path = require("path");
const { spawn } = require("child_process");

function loadPlaywright() {
  try {
    return require("playwright-core");
  } catch (_) {
    const local = path.join(__dirname, "..", "..", "..", "target", "npm", "node_modules", "playwright-core");
    return require(local);
  }
}

function args(argv) {
  const o = { bytes: 1 << 20, target: "svc:echo", timeoutS: 120 };
  const flags = { "--relay-only": "relayOnly", "--identity-only": "identityOnly", "--secure-origin": "secureOrigin" };
  const vals = {
    "--url": "url", "--bytes": "bytes", "--target": "target", "--to": "to", "--turn": "turn",
    "--turn-user": "turnUser", "--turn-pass": "turnPass", "--timeout-s": "timeoutS",
    "--user-data-dir": "userDataDir", "--chromium": "chromium",
  };
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    if (flags[a]) o[flags[a]] = true;
    else if (vals[a] && i + 1 < argv.length) o[vals[a]] = argv[++i];
    else throw new Error("unknown or incomplete argument " + a);
  }
  if (!o.url) throw new Error("--url is required");
  o.bytes = Number(o.bytes);
  o.timeoutS = Number(o.timeoutS);
  if (!Number.isInteger(o.bytes) || o.bytes < 0) throw new Error("--bytes must be a whole number");
  if (!(o.timeoutS > 0)) throw new Error("--timeout-s must be positive");
  return o;
}

let chrome = null;
let tmpDirs = [];
let chromeLog = null;

function cleanup() {
  if (chrome && chrome.exitCode === null && chrome.signalCode === null) {
    // Its own process group (detached): the renderer and utility processes go with it.
    try { process.kill(-chrome.pid, "SIGKILL"); } catch (_) { try { chrome.kill("SIGKILL"); } catch (_) {} }
  }
  for (const d of tmpDirs) {
    try { fs.rmSync(d, { recursive: true, force: true }); } catch (_) {}
  }
}

let finished = false;
function finish(result, code) {
  if (finished) return;
  finished = true;
  process.stdout.write(JSON.stringify(result) + "\n");
  if (code !== 0 && chromeLog) {
    try {
      const text = fs.readFileSync(chromeLog, "utf8").split("\n").slice(-30).join("\n");
      process.stderr.write("--- chromium stderr (last lines)\n" + text + "\n");
    } catch (_) {}
  }
  cleanup();
  process.exit(code);
}

async function waitFor(what, ms, check) {
  const end = Date.now() + ms;
  for (;;) {
    const v = check();
    if (v) return v;
    if (Date.now() > end) throw new Error(what + ": not within " + ms / 1000 + " s");
    await new Promise((r) => setTimeout(r, 50));
  }
}

async function main() {
  const o = args(process.argv.slice(2));
  setTimeout(() => finish({ ok: false, error: "overall timeout of " + o.timeoutS + " s" }, 1), o.timeoutS * 1000).unref();
  const { chromium } = loadPlaywright();

  const home = fs.mkdtempSync(path.join(os.tmpdir(), "meshgate-chromium-"));
  tmpDirs.push(home);
  const udd = o.userDataDir || path.join(home, "profile");
  fs.mkdirSync(udd, { recursive: true });
  try { fs.rmSync(path.join(udd, "DevToolsActivePort")); } catch (_) {}
  chromeLog = path.join(home, "chromium.log");
  const log = fs.openSync(chromeLog, "w");
  const flags = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
    "--disable-features=WebRtcHideLocalIpsWithMdns", "--disable-dev-shm-usage",
    "--user-data-dir=" + udd, "--remote-debugging-port=0", "--remote-debugging-address=127.0.0.1",
    "about:blank",
  ];
  // A plain-http LAN origin is not a secure context: no crypto.subtle, and the page uses its
  // plain-JS SHA-256/ECDSA. --secure-origin makes Chromium treat the gateway's origin as secure,
  // so the WebCrypto path (non-extractable key) runs against the gateway too.
  if (o.secureOrigin) flags.unshift("--unsafely-treat-insecure-origin-as-secure=" + new URL(o.url).origin);
  chrome = spawn(o.chromium || "/usr/bin/chromium", flags, {
    detached: true,
    stdio: ["ignore", log, log],
    env: Object.assign({}, process.env, { HOME: home, XDG_CONFIG_HOME: home, XDG_CACHE_HOME: home }),
  });
  chrome.on("error", (e) => finish({ ok: false, error: "cannot start chromium: " + e.message }, 1));
  chrome.on("exit", (code, sig) => finish({ ok: false, error: "chromium exited (" + (sig || code) + ")" }, 1));

  const portFile = path.join(udd, "DevToolsActivePort");
  const port = await waitFor("chromium's DevToolsActivePort", 30000, () => {
    try { return fs.readFileSync(portFile, "utf8").split("\n")[0].trim(); } catch (_) { return null; }
  });
  const browser = await chromium.connectOverCDP("http://127.0.0.1:" + port, { timeout: 30000 });
  const context = browser.contexts()[0];
  const page = context.pages()[0] || (await context.newPage());
  page.on("console", (m) => process.stderr.write("page: " + m.text() + "\n"));
  page.on("pageerror", (e) => process.stderr.write("page error: " + e.message + "\n"));
  const resp = await page.goto(o.url, { timeout: 20000 });
  if (!resp || !resp.ok()) throw new Error("GET " + o.url + ": HTTP " + (resp ? resp.status() : "no answer"));
  await page.waitForFunction(() => window.meshgate, null, { timeout: 10000 });

  const call = {
    gateway: o.url, to: o.to, bytes: o.bytes, target: o.target,
    iceServers: o.turn ? [{ urls: o.turn, username: o.turnUser || "", credential: o.turnPass || "" }] : [],
    iceTransportPolicy: o.relayOnly ? "relay" : "all", identityOnly: !!o.identityOnly,
    timeoutMs: o.timeoutS * 1000,
  };
  const result = await page.evaluate(async (c) => {
    const identity = await window.meshgate.identity();
    if (c.identityOnly) return { ok: true, identity };
    try {
      const session = await window.meshgate.dial({
        gateway: c.gateway, to: c.to, iceServers: c.iceServers,
        iceTransportPolicy: c.iceTransportPolicy, timeoutMs: 30000,
      });
      const echo = await window.meshgate.echo(c.target, c.bytes, { timeoutMs: c.timeoutMs });
      return Object.assign({ identity, session }, echo);
    } catch (e) {
      return { ok: false, identity, error: String(e && e.message || e) };
    }
  }, call);
  await browser.close().catch(() => {});
  return result;
}

main().then(
  (r) => finish(r, r.ok ? 0 : 1),
  (e) => finish({ ok: false, error: String(e && e.message || e) }, 1),
);
