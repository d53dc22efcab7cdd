// End-to-end tests of the web portal in headless Chromium, against a real
// devnet over HTTPS whose CA the browser trusts (an NSS database in $HOME,
// made by integration/portal_browser.rs, which runs this file). Assertions
// read the DOM and the HTTP responses, never pixels; every page is checked
// with axe-core (no serious or critical WCAG 2.2 A/AA violation) and saved
// as a screenshot under $SCREENSHOTS for people to look at.
//
// Environment: PORTAL_URL (a node's portal, ending in '/'), DEVNET_DIR,
// GOVCHAIN_BIN, CITIZEN_KEY (the devnet's demo citizen), OFFICER_KEY and
// OFFICER_PORTAL_URL (the demo case's health inspector and health's
// portal), SCREENSHOTS, CHROMIUM (default /usr/bin/chromium).

import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { readFileSync, mkdirSync, mkdtempSync } from "node:fs";
import { tmpdir } from "node:os";
import { createRequire } from "node:module";
import { join } from "node:path";
import { chromium } from "playwright-core";

const require = createRequire(import.meta.url);
const AXE_SOURCE = readFileSync(require.resolve("axe-core/axe.min.js"), "utf8");

const env = (name) => {
  const value = process.env[name];
  assert.ok(value, `${name} must be set (integration/portal_browser.rs sets it)`);
  return value;
};
const PORTAL = env("PORTAL_URL");
const DEVNET = env("DEVNET_DIR");
const GOVCHAIN = env("GOVCHAIN_BIN");
const CITIZEN_KEY = env("CITIZEN_KEY");
// An officer of the demo case's health inspection, and health's portal.
const OFFICER_KEY = env("OFFICER_KEY");
const OFFICER_PORTAL = env("OFFICER_PORTAL_URL");
const SCREENSHOTS = env("SCREENSHOTS");
const CHROMIUM = process.env.CHROMIUM || "/usr/bin/chromium";
const STEP_TIMEOUT_MS = 30_000;
// Keys and files the steps write; not screenshots.
const WORK = mkdtempSync(join(tmpdir(), "govchain-portal-"));

let browser;

before(async () => {
  mkdirSync(SCREENSHOTS, { recursive: true });
  browser = await chromium.launch({
    executablePath: CHROMIUM,
    // No traffic but to loopback: Chromium's own background services off.
    args: [
      "--disable-background-networking",
      "--disable-component-update",
      "--disable-sync",
      "--disable-quic",
      "--no-first-run",
      "--disable-gpu",
    ],
  });
});

after(async () => {
  await browser?.close();
});

async function newPage(options = {}) {
  const context = await browser.newContext({ ignoreHTTPSErrors: false, ...options });
  const page = await context.newPage();
  page.setDefaultTimeout(STEP_TIMEOUT_MS);
  return { context, page };
}

/** Runs axe-core on the page; fails on serious or critical violations. */
async function checkAccessibility(page, name) {
  // page.evaluate is not subject to the page's CSP, so axe needs no inline
  // script (which the portal's policy forbids).
  await page.evaluate(`${AXE_SOURCE}\n;undefined`);
  const results = await page.evaluate(() =>
    globalThis.axe.run(document, {
      runOnly: { type: "tag", values: ["wcag2a", "wcag2aa", "wcag21a", "wcag21aa", "wcag22aa"] },
    }),
  );
  const bad = results.violations.filter((v) => v.impact === "serious" || v.impact === "critical");
  assert.deepEqual(
    bad.map((v) => `${v.id} (${v.impact}): ${v.nodes.map((n) => n.target.join(" ")).join(", ")}`),
    [],
    `accessibility violations on ${name}`,
  );
  assert.ok(results.passes.length > 0, "axe checked nothing");
}

async function screenshot(page, name) {
  await page.screenshot({ path: join(SCREENSHOTS, `${name}.png`), fullPage: true });
}

function govchain(args) {
  const run = spawnSync(GOVCHAIN, args, { encoding: "utf8", timeout: 60_000 });
  return { status: run.status, output: `${run.stdout}${run.stderr}` };
}

function respond(payload) {
  return govchain(["identity", "login", "respond", "--key", CITIZEN_KEY, "--dir", DEVNET, payload]);
}

/** Logs the demo citizen in through the QR flow; returns the DID shown. */
async function logIn(page, query = "") {
  await page.goto(`${PORTAL}login${query}`);
  const svg = page.locator(".qr svg");
  assert.equal(await svg.count(), 1, "no QR code on the login page");
  const payload = (await page.locator("#login-payload").textContent()).trim();
  assert.match(payload, /^govchain-login:v1\?chain=/);
  assert.ok(payload.includes(`&cb=${PORTAL}login/callback`), payload);
  assert.ok(payload.endsWith("&scope=account"), payload);
  const answered = respond(payload);
  assert.equal(answered.status, 0, answered.output);
  await page.waitForURL(`${PORTAL}me`);
  return (await page.locator("#citizen-did").textContent()).trim();
}

test("the start page is served over trusted HTTPS with strict security headers", async () => {
  const { context, page } = await newPage();
  const response = await page.goto(PORTAL);
  assert.equal(response.status(), 200);
  const headers = response.headers();
  const csp = headers["content-security-policy"];
  assert.ok(csp.includes("frame-ancestors 'none'"), csp);
  assert.ok(csp.includes("script-src 'self'"), csp);
  assert.ok(!csp.includes("unsafe-inline"), csp);
  assert.ok(headers["strict-transport-security"].startsWith("max-age="));
  assert.equal(headers["x-content-type-options"], "nosniff");
  assert.equal(headers["referrer-policy"], "no-referrer");
  assert.equal(await page.locator("h1").textContent(), "Government data you can trust");
  // Keyboard: the first Tab reaches the skip link.
  await page.keyboard.press("Tab");
  assert.equal(await page.evaluate(() => document.activeElement.className), "skip-link");
  await checkAccessibility(page, "start page");
  await screenshot(page, "01-start");
  await context.close();
});

test("QR login: the device answers and the page logs the citizen in by itself", async () => {
  const { context, page } = await newPage();
  await page.goto(`${PORTAL}login`);
  await checkAccessibility(page, "login page");
  await screenshot(page, "02-login");
  // The site asks for the attested name, which the demo citizen consented
  // to tax; the page shows what the site received.
  const did = await logIn(page, "?attributes=name");
  assert.match(did, /^did:key:z6Mk/);
  const claims = await page.locator("#login-claims").textContent();
  assert.ok(claims.includes("name") && claims.includes("civil"), claims);
  const cookies = await context.cookies();
  const session = cookies.find((c) => c.name === "__Host-govchain-session");
  assert.ok(session, JSON.stringify(cookies));
  assert.equal(session.httpOnly, true);
  assert.equal(session.secure, true);
  assert.equal(session.sameSite, "Strict");
  assert.ok(session.expires > Date.now() / 1000, "the session cookie has no expiry");
  const attributes = await page.locator("#attributes-table tbody tr").allTextContents();
  assert.ok(attributes.some((row) => row.includes("name") && row.includes("Attested")), attributes.join("|"));
  const consents = await page.locator("#consents-table tbody tr").allTextContents();
  assert.ok(consents.some((row) => row.includes("tax") && row.includes("Active")), consents.join("|"));
  await checkAccessibility(page, "citizen page");
  await screenshot(page, "03-citizen");
  await context.close();
});

test("a department's read of the citizen's data appears in the access log", async () => {
  const { context, page } = await newPage();
  const did = await logIn(page);
  const consent = await page.locator("#consents-table tbody tr", { hasText: "tax" }).first()
    .locator("code").getAttribute("title");
  assert.match(consent, /^[0-9a-f]{64}$/);
  const before = await page.locator("#access-table tbody tr").count();
  const read = govchain([
    "identity", "access", "--dir", DEVNET, "--department", "tax",
    "--signing-key", join(DEVNET, "certs/tax/signing.key"),
    "--citizen", did, "--name", "name", "--consent", consent,
    "--purpose", "demo", "--out", join(WORK, "read-name.bin"),
  ]);
  assert.equal(read.status, 0, read.output);
  await page.reload();
  const rows = await page.locator("#access-table tbody tr").allTextContents();
  assert.equal(rows.length, before + 1, rows.join("|"));
  assert.ok(
    rows.some((row) => row.includes("tax") && row.includes("demo") && row.includes("Read")),
    rows.join("|"),
  );
  await screenshot(page, "04-access-log");
  await context.close();
});

test("granting then revoking a consent, each signed on the device", async () => {
  const { context, page } = await newPage();
  await logIn(page);
  const signOnDevice = async () => {
    const payload = (await page.locator("#sign-payload").textContent()).trim();
    assert.match(payload, /^govchain-sign:v1\?chain=/);
    const signed = govchain(["identity", "respond", "--key", CITIZEN_KEY, "--dir", DEVNET, payload]);
    assert.equal(signed.status, 0, signed.output);
    await page.waitForURL(`${PORTAL}me#consents`);
  };
  const row = () => page.locator("#consents-table tbody tr", { hasText: "browser check" });
  await page.locator("#give-consent summary").click();
  await page.selectOption("#consent-department", "health");
  await page.check("#consent-attribute-name");
  await page.fill("#consent-purpose", "browser check");
  await page.selectOption("#consent-days", "30");
  await page.click("#give-consent button[type=submit]");
  await page.waitForURL(`${PORTAL}me/consents/new`);
  await checkAccessibility(page, "signing request page");
  await screenshot(page, "12-consent-request");
  await signOnDevice();
  assert.equal(await row().count(), 1);
  assert.ok((await row().textContent()).includes("Active"));
  assert.ok((await row().textContent()).includes("health"));
  await row().locator("button", { hasText: "Revoke" }).click();
  await page.waitForURL(`${PORTAL}me/consents/revoke`);
  assert.ok((await page.locator("main").textContent()).includes("revoke consent"));
  await signOnDevice();
  assert.ok((await row().textContent()).includes("Revoked"), await row().textContent());
  assert.equal(await row().locator("button").count(), 0, "a revoked consent offers no revoke");
  await screenshot(page, "13-consent-revoked");
  await context.close();
});

test("an officer logs in, finds the case in the inbox and approves the step on the device", async () => {
  const { context, page } = await newPage({ acceptDownloads: true });
  await page.goto(`${OFFICER_PORTAL}login?as=officer`);
  const payload = (await page.locator("#login-payload").textContent()).trim();
  assert.ok(payload.endsWith("&as=officer"), payload);
  // A citizen's key is not an officer's.
  const citizen = govchain(["identity", "respond", "--key", CITIZEN_KEY, "--dir", DEVNET, payload]);
  assert.equal(citizen.status, 1, citizen.output);
  assert.ok(citizen.output.includes("is not an officer of department"), citizen.output);
  const officer = govchain(["identity", "respond", "--key", OFFICER_KEY, "--dir", DEVNET, payload]);
  assert.equal(officer.status, 0, officer.output);
  await page.waitForURL(`${OFFICER_PORTAL}officer`);
  const rows = page.locator("#inbox-table tbody tr", { hasText: "health-inspection" });
  assert.equal(await rows.count(), 1, await page.locator("main").textContent());
  await checkAccessibility(page, "officer inbox");
  await screenshot(page, "14-officer-inbox");
  await rows.first().locator("a").click();
  await page.waitForURL(/\/officer\/case\/[0-9a-f]{64}$/);
  const caseUrl = page.url();
  await checkAccessibility(page, "case page");
  await screenshot(page, "15-case");
  // The step may read the floor plan: it downloads from the node.
  const [download] = await Promise.all([
    page.waitForEvent("download"),
    page.locator("#case-documents a", { hasText: "floor-plan" }).click(),
  ]);
  assert.equal(download.suggestedFilename(), "floor-plan");
  const plan = readFileSync(await download.path());
  assert.ok(plan.length > 0, "the document is empty");
  // Rejecting needs a reason: the form is refused without one.
  await page.check("#health-inspection-reject");
  await page.click("form.decision button[type=submit]");
  assert.ok((await page.locator(".error-message").textContent()).includes("Give a reason"));
  await page.goto(caseUrl);
  await page.check("#health-inspection-approve");
  await page.click("form.decision button[type=submit]");
  const request = (await page.locator("#sign-payload").textContent()).trim();
  assert.ok(request.includes("&action=act-on-case&"), request);
  const signed = govchain(["identity", "respond", "--key", OFFICER_KEY, "--dir", DEVNET, request]);
  assert.equal(signed.status, 0, signed.output);
  await page.waitForURL(caseUrl);
  const step = await page.locator("#steps-table tbody tr", { hasText: "health-inspection" }).textContent();
  assert.ok(step.includes("Approved"), step);
  const history = await page.locator("#history-table tbody").textContent();
  assert.ok(history.includes("approve"), history);
  assert.equal(await page.locator("#no-decision").count(), 1, "the step still offers a decision");
  await screenshot(page, "16-case-approved");
  // The evidence bundle from the page verifies offline against genesis.
  const [evidence] = await Promise.all([
    page.waitForEvent("download"),
    page.locator("#case-bundle").click(),
  ]);
  assert.equal(evidence.suggestedFilename(), "case-bundle.json");
  const bundlePath = join(WORK, "case-bundle.json");
  await evidence.saveAs(bundlePath);
  const verified = govchain(["verify", bundlePath, "--genesis", join(DEVNET, "certs/genesis.json")]);
  assert.equal(verified.status, 0, verified.output);
  const caseId = caseUrl.split("/").pop();
  assert.ok(verified.output.includes(caseId), verified.output);
  await context.close();
});

test("the explorer shows a new block live, its certificate and its transactions", async () => {
  const { context, page } = await newPage();
  await page.goto(`${PORTAL}explorer`);
  const height = Number(await page.locator("#status-height").textContent());
  assert.ok(height > 0, "the devnet's demo committed blocks");
  const validators = await page.locator("#validators-table tbody tr").allTextContents();
  assert.equal(validators.length, 4, validators.join("|"));
  await checkAccessibility(page, "explorer");
  // A new block, while the page stays open: the status and the table follow.
  const key = join(WORK, "anchor.key");
  const made = govchain(["keys", "new", "--out", key, "--force"]);
  assert.equal(made.status, 0, made.output);
  const anchored = govchain([
    "record", "anchor", join(DEVNET, "devnet.json"), "--dataset", "browser-test",
    "--record-id", `devnet-${Date.now()}`, "--signing-key", key, "--wait", "--dir", DEVNET,
  ]);
  assert.equal(anchored.status, 0, anchored.output);
  await page.waitForFunction(
    (before) => Number(document.getElementById("status-height").textContent) > before,
    height,
  );
  const newest = Number(await page.locator("#status-height").textContent());
  await page.waitForFunction(
    (newest) => document.querySelector("#blocks-table tbody tr th")?.textContent === String(newest),
    newest,
  );
  await screenshot(page, "05-explorer");
  // Search by height, then open the block and its transaction.
  await page.fill("#search-input", String(newest));
  await page.click(".search button");
  await page.waitForURL(`${PORTAL}explorer/block/${newest}`);
  const signers = await page.locator("#certificate-signers li").count();
  assert.ok(signers >= 3, `a commit certificate of 4 validators needs 3 signatures, shows ${signers}`);
  await checkAccessibility(page, "block page");
  await screenshot(page, "06-block");
  await page.locator("#transactions-table tbody a").first().click();
  await page.waitForURL(/\/explorer\/tx\/[0-9a-f]{64}$/);
  assert.equal((await page.locator("#transaction-status").textContent()).trim(), "Committed");
  await checkAccessibility(page, "transaction page");
  await screenshot(page, "07-transaction");
  // Anchors by dataset, from the search box.
  await page.fill("#search-input", "browser-test");
  await page.click(".search button");
  await page.waitForURL(/\/explorer\/anchors\?dataset=browser-test$/);
  assert.ok((await page.locator("#anchors-table tbody tr").count()) >= 1);
  await checkAccessibility(page, "anchors page");
  // An unknown page is a page too.
  const missing = await page.goto(`${PORTAL}explorer/nowhere`);
  assert.equal(missing.status(), 404);
  await checkAccessibility(page, "not-found page");
  await context.close();
});

test("an expired challenge is refused, on the device and on the page", async () => {
  const { context, page } = await newPage();
  await page.goto(`${PORTAL}login?ttl=5`);
  const payload = (await page.locator("#login-payload").textContent()).trim();
  await page.waitForFunction(
    () => document.getElementById("login-status").textContent.includes("expired"),
    null,
    { timeout: 20_000 },
  );
  const late = respond(payload);
  assert.equal(late.status, 1, late.output);
  assert.ok(late.output.includes("expired"), late.output);
  assert.ok(page.url().endsWith("/login?ttl=5"), "the page must not log in");
  await screenshot(page, "08-expired");
  await context.close();
});

test("a form posted without its CSRF token is refused", async () => {
  const { context, page } = await newPage();
  await logIn(page);
  // A form the page did not make (as a forged one would be), posted by
  // the browser with the session cookie: without a token, then a wrong one.
  const post = async (token) => {
    const [response] = await Promise.all([
      page.waitForNavigation({ url: `${PORTAL}logout`, waitUntil: "load" }),
      page.evaluate((token) => {
        const form = document.createElement("form");
        form.method = "post";
        form.action = "/logout";
        if (token !== null) {
          const field = document.createElement("input");
          field.type = "hidden";
          field.name = "csrf";
          field.value = token;
          form.append(field);
        }
        document.body.append(form);
        form.submit();
      }, token),
    ]);
    return response;
  };
  const missing = await post(null);
  assert.equal(missing.status(), 403);
  assert.ok((await missing.text()).includes("CSRF"));
  await page.goto(`${PORTAL}me`);
  const wrong = await post("0".repeat(64));
  assert.equal(wrong.status(), 403);
  // Still logged in; the real form logs out.
  await page.goto(`${PORTAL}me`);
  assert.ok(page.url().endsWith("/me"));
  await page.click("header button[type=submit]");
  await page.waitForURL(PORTAL);
  await page.goto(`${PORTAL}me`);
  assert.ok(page.url().endsWith("/login"), page.url());
  await context.close();
});

test("without JavaScript the login works with the Continue button", async () => {
  const { context, page } = await newPage({ javaScriptEnabled: false });
  await page.goto(`${PORTAL}login`);
  await page.locator("#login-finish button").click();
  assert.ok((await page.locator(".error-message").textContent()).includes("not answered yet"));
  await page.goto(`${PORTAL}login`);
  const payload = (await page.locator("#login-payload").textContent()).trim();
  const answered = respond(payload);
  assert.equal(answered.status, 0, answered.output);
  await page.locator("#login-finish button").click();
  await page.waitForURL(`${PORTAL}me`);
  assert.match((await page.locator("#citizen-did").textContent()).trim(), /^did:key:/);
  await context.close();
});

test("pages read at 360 px wide without sideways scrolling", async () => {
  const { context, page } = await newPage({ viewport: { width: 360, height: 740 } });
  for (const [path, name] of [["", "09-narrow-start"], ["explorer", "10-narrow-explorer"], ["login", "11-narrow-login"]]) {
    await page.goto(`${PORTAL}${path}`);
    const width = await page.evaluate(() => document.documentElement.scrollWidth);
    assert.ok(width <= 360, `${path || "/"} is ${width} px wide`);
    await screenshot(page, name);
  }
  await context.close();
});
