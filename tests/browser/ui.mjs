// Drives the web UI of a running `mnemon serve` in Debian's headless chromium, the way a
// person uses it. Run by tests/it/browser.rs, which starts the node and passes:
//   MNEMON_URL   the node's address, e.g. http://127.0.0.1:7777
//   MNEMON_TOKEN its API token
//   MNEMON_SHOTS the folder to keep screenshots in
// Exits non-zero, naming the step, when anything a person would see is wrong.
import { chromium } from "playwright-core";
import { mkdirSync, readFileSync } from "node:fs";
import assert from "node:assert/strict";

const base = process.env.MNEMON_URL;
const token = process.env.MNEMON_TOKEN;
const shots = process.env.MNEMON_SHOTS ?? "target/screenshots";
assert.ok(base && token, "MNEMON_URL and MNEMON_TOKEN must be set");
mkdirSync(shots, { recursive: true });

const browser = await chromium.launch({
  executablePath: process.env.MNEMON_CHROMIUM ?? "/usr/bin/chromium",
  args: [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
  ],
});
const context = await browser.newContext({ viewport: { width: 1280, height: 800 } });
context.setDefaultTimeout(15000);
const page = await context.newPage();
const consoleErrors = [];
// Resource errors the steps cause on purpose (a wrong token, a link to nothing) are
// expected; anything else in the console is a failure.
const expectedFailures = [/\/signin$/, /\/m\/[0-9A-Z]{26}\/links$/, /\/no\/such\/page$/, /\/collections$/, /\/memories$/, /\/m\/[0-9A-Z]{26}$/, /\/collections\/[0-9A-Z]{26}\/(share|rename)$/, /\/tasks$/];
page.on("console", (m) => {
  if (m.type() !== "error") return;
  const url = m.location()?.url ?? "";
  if (m.text().startsWith("Failed to load resource") && expectedFailures.some((re) => re.test(url))) return;
  consoleErrors.push(`${m.text()} (${url})`);
});
page.on("pageerror", (e) => consoleErrors.push(String(e)));

let stepName = "";

// axe-core, evaluated in the page through the DevTools protocol (the page's own CSP
// forbids injected scripts, rightly).
const axeSource = readFileSync(new URL("./node_modules/axe-core/axe.min.js", import.meta.url), "utf8");
async function seriousViolations(path) {
  await page.goto(base + path);
  await page.evaluate(axeSource);
  const result = await page.evaluate(() => globalThis.axe.run(document, { resultTypes: ["violations"] }));
  return result.violations
    .filter((v) => v.impact === "serious" || v.impact === "critical")
    .map((v) => `${path}: ${v.id} (${v.impact}) at ${v.nodes.slice(0, 3).map((n) => n.target.join(" ")).join("; ")}`);
}
async function step(name, body) {
  stepName = name;
  process.stdout.write(`step: ${name}\n`);
  await body();
}
const shot = (name, p = page) => p.screenshot({ path: `${shots}/${name}.png`, fullPage: true });
const idFromUrl = (url) => new URL(url).pathname.split("/").pop();

async function capture(title, content, tags) {
  await page.goto(base + "/");
  await page.fill("#capture-title", title);
  await page.fill("#capture-content", content);
  await page.fill('#capture input[name="tags"]', tags);
  // Ctrl+Enter saves, from the keyboard.
  await page.focus("#capture-content");
  await page.keyboard.press("Control+Enter");
  await page.waitForURL(/\/m\/[0-9A-Z]{26}$/);
  assert.equal(await page.textContent("#memory-title"), title);
  return idFromUrl(page.url());
}

try {
  await step("sign-in refuses a wrong token", async () => {
    await page.goto(base + "/");
    await page.waitForURL(/\/signin/);
    await page.fill("#token", "mnm_wrong");
    await page.click('#signin button[type="submit"]');
    await page.waitForSelector(".error");
    assert.match(await page.textContent(".error"), /not this node's token/);
    await shot("01-sign-in-refused");
  });

  await step("sign in with a one-time link (what `mnemon serve` prints)", async () => {
    const made = await page.request.post(base + "/api/v1/signin-links", { headers: { authorization: `Bearer ${token}` } });
    assert.equal(made.status(), 201);
    const { url } = await made.json();
    assert.match(url, /\/signin\?code=/);
    await page.goto(url);
    await page.waitForSelector("#capture");
    assert.equal(new URL(page.url()).search, "", "the code is gone from the address");
    await shot("02-home-empty");
    // Once used, the link signs nobody else in.
    const other = await browser.newContext();
    const again = await other.newPage();
    await again.goto(url);
    await again.waitForURL(/\/signin/);
    assert.equal(await again.locator("#capture").count(), 0);
    await other.close();
  });

  let alpha, beta;
  await step("create a memory", async () => {
    alpha = await capture(
      "Plumber invoice",
      "Paid **42 euros** to the plumber for the kitchen pipe.\n\n- [x] paid\n- [ ] file it",
      "home, bills",
    );
    assert.equal(await page.textContent("#memory-content strong"), "42 euros");
    assert.ok(await page.isVisible('.meta a.tag:has-text("#bills")'));
    await shot("03-memory-page");
    beta = await capture("Kitchen renovation plan", "New cupboards in spring; ask the carpenter.", "home");
  });

  await step("search as you type finds it, with the words highlighted", async () => {
    await page.goto(base + "/");
    await page.focus("body");
    await page.keyboard.press("/"); // the shortcut focuses the search box
    assert.equal(await page.evaluate(() => document.activeElement.id), "q");
    await page.keyboard.type("plumb", { delay: 60 });
    await page.keyboard.type("er", { delay: 60 });
    const hit = page.locator(`#results li.hit[data-id="${alpha}"]`);
    await hit.waitFor();
    assert.equal(await hit.locator("a.title").textContent(), "Plumber invoice");
    assert.match(await hit.locator("mark").first().textContent(), /plumber/i);
    assert.ok(await page.isHidden("#list"), "the list hides while searching");
    await shot("04-search-as-you-type");
  });

  await step("edit it", async () => {
    await page.goto(`${base}/m/${alpha}`);
    await page.click("#edit summary");
    await page.fill('#edit-form input[name="title"]', "Plumber invoice (paid in March)");
    await page.fill('#edit-form input[name="tags"]', "home, bills, paid");
    await page.click('#edit-form button[type="submit"]');
    await page.waitForFunction(
      () => document.querySelector("#memory-title")?.textContent === "Plumber invoice (paid in March)",
    );
    assert.ok(await page.isVisible('.meta a.tag:has-text("#paid")'));
    // The edit is searchable at once.
    await page.goto(base + "/search");
    await page.fill("#q", "March");
    await page.locator(`#results li.hit[data-id="${alpha}"]`).waitFor();
    // Without a model of meaning the modes say what they do, and how to get one.
    assert.ok(await page.isVisible("#no-model"), "the page says no model of meaning is installed");
    assert.equal(await page.locator('select[name="mode"] option[value="hybrid"]').textContent(), "Words and spellings");
    // Every hit shows its date.
    assert.match(await page.locator(`#results li.hit[data-id="${alpha}"] .meta time`).textContent(), /^\d{4}-\d{2}-\d{2} \d{2}:\d{2}$/);
    await shot("05-edited-and-found");
  });

  await step("forget a memory's earlier versions", async () => {
    await page.goto(`${base}/m/${alpha}`);
    await page.click("#edit summary");
    await page.click('#forget-history-form button[type="submit"]');
    await page.waitForSelector("#history-forgotten");
    const fresh = new URL(page.url()).pathname.split("/m/")[1];
    assert.notEqual(fresh, alpha, "the memory is written again under a new id");
    assert.equal(await page.textContent("#memory-title"), "Plumber invoice (paid in March)");
    assert.ok(await page.isVisible('.meta a.tag:has-text("#paid")'));
    const old = await page.request.get(`${base}/m/${alpha}`);
    assert.equal(old.status(), 404, "the old id is gone");
    alpha = fresh;
  });

  await step("link two memories and see the backlink", async () => {
    await page.goto(`${base}/m/${beta}`);
    await page.fill("#link-target", "Plumber invoice (paid in March)");
    await page.click('#link-form button[type="submit"]');
    await page.locator(`#links a[href="/m/${alpha}"]`).waitFor();
    await page.goto(`${base}/m/${alpha}`);
    const back = page.locator(`#backlinks a[href="/m/${beta}"]`);
    await back.waitFor();
    assert.equal(await back.textContent(), "Kitchen renovation plan");
    await shot("06-backlink");
    await page.goto(`${base}/graph`);
    assert.equal(await page.locator("#graph circle").count(), 2);
    assert.equal(await page.locator("#graph line").count(), 1);
    assert.equal(await page.getAttribute("#graph line", "marker-end"), "url(#arrow)", "links have a direction");
    await page.click('[data-zoom="in"]');
    const zoomed = (await page.getAttribute("#graph", "viewBox")).split(" ").map(Number);
    assert.ok(zoomed[2] < 1000, `zoomed in: ${zoomed}`);
    // Dragging pans.
    const box = await page.locator("#graph").boundingBox();
    await page.mouse.move(box.x + 20, box.y + 20);
    await page.mouse.down();
    await page.mouse.move(box.x + 120, box.y + 80, { steps: 5 });
    await page.mouse.up();
    const panned = (await page.getAttribute("#graph", "viewBox")).split(" ").map(Number);
    assert.ok(panned[0] < zoomed[0] && panned[1] < zoomed[1], `panned: ${zoomed} -> ${panned}`);
    await page.click('[data-zoom="reset"]');
    assert.equal(await page.getAttribute("#graph", "viewBox"), "0 0 1000 700");
    await shot("07-graph");
  });

  await step("form errors show where they happen and keep what was typed", async () => {
    // A link to a title that does not exist: said beside the link form, on the page.
    await page.goto(`${base}/m/${beta}`);
    await page.fill("#link-target", "No such memory at all");
    await page.fill('#link-form input[name="relation"]', "cites");
    await page.click('#link-form button[type="submit"]');
    await page.waitForSelector("#link-error");
    assert.match(await page.textContent("#link-error"), /no memory is titled “No such memory at all”/);
    assert.equal(await page.textContent("#memory-title"), "Kitchen renovation plan", "still the memory's page");
    assert.equal(await page.inputValue("#link-target"), "No such memory at all");
    assert.equal(await page.inputValue('#link-form input[name="relation"]'), "cites");
    await shot("06b-link-error-inline");
    // A collection name taken: said beside the form, the name kept.
    await page.goto(base + "/collections");
    await page.fill('#new-collection input[name="name"]', "default");
    await page.click('#new-collection button[type="submit"]');
    await page.waitForSelector("#new-collection-error");
    assert.match(await page.textContent("#new-collection-error"), /exists already/);
    assert.equal(await page.inputValue('#new-collection input[name="name"]'), "default");
    // A capture the node refuses (a collection that does not exist, as a stale page
    // would send): the text typed is all still there.
    await page.goto(base + "/");
    await page.fill("#capture-title", "Draft");
    await page.fill("#capture-content", "words I do not want to type again");
    await page.evaluate(() => {
      const select = document.querySelector('#capture select[name="collection"]');
      select.add(new Option("gone", "01J0000000000000000000000Z"));
      select.value = "01J0000000000000000000000Z";
    });
    await page.click('#capture button[type="submit"]');
    await page.waitForSelector("#capture-error");
    assert.equal(await page.inputValue("#capture-content"), "words I do not want to type again");
    assert.equal(await page.inputValue("#capture-title"), "Draft");
    assert.ok(await page.isVisible('nav a[href="/"]'), "with the navigation");
    // An edit the node refuses (an importance out of range, past the browser's own
    // check): the panel stays open with the error and every field as typed.
    await page.goto(`${base}/m/${beta}`);
    await page.click("#edit summary");
    await page.evaluate(() => { document.getElementById("edit-form").noValidate = true; });
    await page.fill('#edit-form input[name="title"]', "Kitchen plan, revised");
    await page.fill('#edit-form input[name="importance"]', "7");
    await page.click('#edit-form button[type="submit"]');
    await page.waitForSelector("#edit-error");
    assert.match(await page.textContent("#edit-error"), /importance/);
    assert.equal(await page.inputValue('#edit-form input[name="title"]'), "Kitchen plan, revised");
    assert.equal(await page.textContent("#memory-title"), "Kitchen renovation plan", "nothing was saved");
  });

  await step("delete and undo", async () => {
    await page.goto(`${base}/m/${beta}`);
    await page.click('#delete-form button[type="submit"]');
    await page.waitForSelector("#undo");
    // The banner counts down the seconds left.
    await page.waitForFunction(() => /^Undo \(\d+\)$/.test(document.querySelector("#undo")?.textContent ?? ""));
    assert.equal(await page.locator(`#list li[data-id="${beta}"]`).count(), 0, "hidden at once");
    assert.equal(await page.locator(`#list li[data-id="${alpha}"]`).count(), 1);
    await shot("08-deleted-with-undo");
    await page.click("#undo");
    // Undo writes it again, as a new memory.
    await page.waitForURL(/\/m\/[0-9A-Z]{26}$/);
    assert.equal(await page.textContent("#memory-title"), "Kitchen renovation plan");
    beta = page.url().split("/m/")[1];
    await page.goto(base + "/");
    await page.locator(`#list li[data-id="${beta}"]`).waitFor();
  });

  await step("live updates: a memory added elsewhere appears without a reload", async () => {
    await page.goto(base + "/");
    // Once the event stream is connected, add through the API with the token, as another
    // device would.
    await page.waitForSelector('body[data-live="on"]');
    const response = await fetch(base + "/api/v1/memories", {
      method: "POST",
      headers: { Authorization: `Bearer ${token}`, "Content-Type": "application/json" },
      body: JSON.stringify({ title: "Added from elsewhere", content: "It shows up live." }),
    });
    assert.equal(response.status, 201);
    const { id } = await response.json();
    await page.locator(`#list li[data-id="${id}"]`).waitFor();
    await shot("09-live-update");
  });

  await step("status, collections and the API reference", async () => {
    await page.goto(base + "/status");
    assert.equal((await page.textContent("#status-memories")).trim(), "3");
    assert.match(await page.textContent("#backup-status"), /none taken yet/);
    // A backup, downloaded from the status page, sealed with the passphrase typed.
    await page.fill('form.backup input[name="passphrase"]', process.env.MNEMON_BACKUP_PASSPHRASE);
    const [download] = await Promise.all([
      page.waitForEvent("download"),
      page.click('form.backup button[type="submit"]'),
    ]);
    assert.match(download.suggestedFilename(), /^mnemon-[1-9A-HJ-NP-Za-km-z]{8}-\d{8}T\d{6}\.\d{3}Z\.mnemonbak$/);
    await download.saveAs(process.env.MNEMON_BACKUP_OUT);
    // Only backups the node itself wrote to a file count as taken: a download may be
    // thrown away.
    await page.goto(base + "/status");
    assert.match(await page.textContent("#backup-status"), /none taken yet/);
    await shot("10-status");
    await page.goto(base + "/collections");
    await page.fill('#new-collection input[name="name"]', "recipes");
    await page.click('#new-collection button[type="submit"]');
    await page.locator('ul.collections a:has-text("recipes")').waitFor();
    await page.goto(base + "/api");
    assert.ok(await page.isVisible('code:has-text("/api/v1/memories/{id}/backlinks")'));
    await shot("11-api-reference");
  });

  await step("the graph around a memory", async () => {
    await page.goto(`${base}/m/${alpha}`);
    await page.click("#graph-around");
    await page.waitForURL(/\/graph\?center=/);
    await page.waitForSelector("svg#graph circle.center");
    assert.ok((await page.textContent("h1")).includes("Links around"));
    assert.ok((await page.locator("svg#graph text").count()) >= 2, "the center and its neighbour");
    await shot("13-graph-around");
  });

  await step("tasks: add one, finish it, earn its points", async () => {
    await page.goto(base + "/tasks");
    await page.fill("#task-text", "Water the plants");
    await page.selectOption('#task-form select[name="difficulty"]', "3");
    await page.click('#task-form button[type="submit"]');
    await page.waitForURL(`${base}/tasks`);
    const item = page.locator('#open-tasks li:has-text("Water the plants")');
    await item.waitFor();
    assert.ok((await item.textContent()).includes("30 xp"));
    await shot("14-task-open");
    // A difficulty the node refuses (past the page's own choices): said above the form,
    // the task's text kept.
    await page.fill("#task-text", "Mow the lawn");
    await page.evaluate(() => {
      const select = document.querySelector('#task-form select[name="difficulty"]');
      select.add(new Option("9", "9"));
      select.value = "9";
    });
    await page.click('#task-form button[type="submit"]');
    await page.waitForSelector("#task-error");
    assert.equal(await page.inputValue("#task-text"), "Mow the lawn");
    await page.goto(base + "/tasks");
    await item.locator("button.done").click();
    await page.locator('#done-tasks li:has-text("Water the plants")').waitFor();
    assert.ok((await page.textContent("#xp")).includes("30 xp"));
    await shot("15-task-done");
    // A done task reopens.
    await page.locator('#done-tasks li:has-text("Water the plants") button.reopen').click();
    await page.locator('#open-tasks li:has-text("Water the plants")').waitFor();
  });

  await step("chat: the answer streams in with citations linked to memories", async () => {
    await page.goto(base + "/chat");
    await page.fill("#question", "What is the kitchen renovation plan?");
    await page.click("#ask");
    const citation = page.locator("#answer a.citation");
    await citation.first().waitFor();
    assert.ok((await page.textContent("#answer")).startsWith("From your notes:"));
    await page.locator("#sources li.cited").first().waitFor();
    const href = await citation.first().getAttribute("href");
    assert.match(href, /^\/m\/[0-9A-Z]{26}$/);
    await shot("16-chat");
    await citation.first().click();
    await page.waitForURL(base + href);
  });

  await step("notes link by title, even to a note written later", async () => {
    await page.goto(base + "/");
    await page.fill("#capture-title", "Trip plan");
    await page.fill("#capture-content", "Pack by [[Packing list]] first.\n\nSee https://example.org/trip #travel");
    await page.click('#capture button[type="submit"]');
    await page.waitForURL(/\/m\/[0-9A-Z]{26}$/);
    const plan = page.url();
    // Not written yet: shown as such, and clicking it starts that note.
    await page.click("#memory-content .unresolved a");
    await page.waitForURL(/\/\?title=Packing%20list/);
    assert.equal(await page.inputValue("#capture-title"), "Packing list");
    await page.fill("#capture-content", "- [ ] passport\n- [ ] charger");
    await page.click('#capture button[type="submit"]');
    await page.waitForURL(/\/m\/[0-9A-Z]{26}$/);
    await page.goto(plan);
    assert.equal(await page.locator("#memory-content .unresolved").count(), 0, "resolved");
    await page.click('#memory-content a:text("Packing list")');
    await page.waitForURL(/\/m\/[0-9A-Z]{26}$/);
    assert.equal(await page.textContent("#memory-title"), "Packing list");
    await page.goto(plan);
    assert.equal(await page.getAttribute('#memory-content a:text("#travel")', "href"), "/?tag=travel");
    await shot("13-wikilinks");
  });

  await step("tick a checkbox in a note's text", async () => {
    await page.goto(`${base}/m/${alpha}`);
    const box = page.locator('#memory-content input.tick[data-task="1"]');
    assert.equal(await box.isChecked(), false);
    const ticked = page.waitForResponse((r) => r.url().endsWith(`/m/${alpha}/tick`) || r.url().endsWith(`/m/${alpha}`));
    await box.check();
    await ticked;
    await page.waitForFunction(() => !document.querySelector('#memory-content input.tick[data-task="1"]').disabled);
    await page.reload();
    assert.equal(await page.locator('#memory-content input.tick[data-task="1"]').isChecked(), true, "kept");
    await shot("15-ticked");
  });

  await step("times in the browser's time zone, a real 404, an installable app", async () => {
    await page.goto(base + "/");
    const time = page.locator("#list time").first();
    assert.notEqual(await time.textContent(), (await time.getAttribute("datetime")).slice(0, 16), "formatted for people");
    const missing = await page.goto(base + "/no/such/page");
    assert.equal(missing.status(), 404);
    assert.equal(await page.textContent("h1"), "Nothing here");
    assert.equal(await page.locator('.error-nav a[href="/"]').count(), 1, "a way on");
    await shot("14-not-found");
    const manifest = await (await page.request.get(base + "/manifest.webmanifest")).json();
    assert.equal(manifest.share_target.action, "/share");
    await page.goto(base + "/");
    await page.waitForFunction(async () => (await navigator.serviceWorker.getRegistration()) !== undefined);
    await page.goto(base + "/share?title=Shared&text=From%20another%20app&url=https%3A%2F%2Fexample.org%2Fx");
    assert.equal(await page.inputValue("#capture-title"), "Shared");
    assert.equal(await page.inputValue("#capture-content"), "From another app\n\nhttps://example.org/x");
  });

  await step("share a collection: an invite ticket, a member, a role changed, revoked", async () => {
    await page.goto(base + "/collections");
    await page.click('li.collection:has(a:text-is("recipes")) a.sharing');
    await page.waitForURL(/\/collections\/[0-9A-Z]{26}$/);
    assert.equal(await page.textContent("#collection-name"), "recipes");
    assert.match(await page.textContent("main"), /Shared with nobody yet/);
    await page.selectOption('#invite-form select[name="role"]', "write");
    await page.click('#invite-form button[type="submit"]');
    await page.locator("#ticket").waitFor();
    assert.match(await page.textContent("#ticket-text"), /^mnemon1[0-9a-z]+$/);
    assert.match(await page.textContent("#ticket"), /as write/);
    await page.click("#copy-ticket");
    await page.waitForFunction(() => document.getElementById("copy-ticket").textContent !== "Copy");
    await shot("19-invite-ticket");
    // Not a DID at all: said beside the form, what was typed kept.
    await page.fill('#share-form input[name="did"]', "did:key:typo");
    await page.click('#share-form button[type="submit"]');
    await page.waitForSelector("#share-error");
    assert.match(await page.textContent("#share-error"), /not a did:key/);
    assert.equal(await page.inputValue('#share-form input[name="did"]'), "did:key:typo");
    // Sharing with a node never met warns (a typo would share with nobody).
    const other = process.env.MNEMON_OTHER_DID;
    await page.fill('#share-form input[name="did"]', other);
    await page.click('#share-form button[type="submit"]');
    await page.locator("#share-warning").waitFor();
    const row = page.locator(`#members tr[data-did="${other}"]`);
    assert.equal(await row.locator('select[name="role"]').inputValue(), "read");
    assert.match(await row.textContent(), /not met yet/);
    // A name in place of the DID.
    await row.locator("details.name-node summary").click();
    await row.locator('form.name input[name="name"]').fill("Grandma's laptop");
    await row.locator('form.name button[type="submit"]').click();
    await page.waitForURL(/\/collections\/[0-9A-Z]{26}$/);
    assert.equal(await row.locator(".node-name").textContent(), "Grandma's laptop");
    await row.locator('select[name="role"]').selectOption("write");
    await row.locator('form.role button[type="submit"]').click();
    await page.waitForURL(/\/collections\/[0-9A-Z]{26}$/);
    assert.equal(await page.locator(`#members tr[data-did="${other}"] select[name="role"]`).inputValue(), "write");
    await shot("20-members");
    await page.locator(`#members tr[data-did="${other}"] form.revoke button`).click();
    await page.waitForURL(/\/collections\/[0-9A-Z]{26}$/);
    assert.equal(await page.locator(`#members tr[data-did="${other}"]`).count(), 0, "revoked");
  });

  await step("move a note to a new collection, rename that, delete it with its note", async () => {
    const ferry = await capture("Ferry times", "Boats leave at 7:15 and 9:40", "travel");
    await page.goto(base + "/collections");
    await page.fill('#new-collection input[name="name"]', "Trips");
    await page.click('#new-collection button[type="submit"]');
    await page.locator('ul.collections a:text-is("Trips")').waitFor();
    await page.goto(`${base}/m/${ferry}`);
    await page.click("#edit summary");
    await page.selectOption('#move-form select[name="collection"]', { label: "Trips" });
    await shot("17-move");
    await page.click('#move-form button[type="submit"]');
    await page.waitForURL((url) => url.pathname.startsWith("/m/") && !url.pathname.endsWith(ferry));
    const moved = idFromUrl(page.url());
    assert.equal(await page.textContent("#memory-title"), "Ferry times");
    assert.ok(await page.isVisible('.meta a:text-is("Trips")'), "shown in its new collection");
    assert.equal((await page.request.get(`${base}/m/${ferry}`)).status(), 404, "the old address is gone");
    await page.goto(base + "/collections");
    const trips = page.locator('li.collection:has(a:text-is("Trips"))');
    await trips.locator("summary").click();
    // A name taken: said beside that collection's form, the panel open, the name kept.
    await trips.locator('form.rename input[name="name"]').fill("recipes");
    await trips.locator('form.rename button[type="submit"]').click();
    await trips.locator(".rename-error").waitFor();
    assert.match(await trips.locator(".rename-error").textContent(), /exists already/);
    assert.equal(await trips.locator('form.rename input[name="name"]').inputValue(), "recipes");
    await trips.locator('form.rename input[name="name"]').fill("Holidays");
    await trips.locator('form.rename button[type="submit"]').click();
    const holidays = page.locator('li.collection:has(a:text-is("Holidays"))');
    await holidays.waitFor();
    await holidays.locator("summary").click();
    assert.match(await holidays.locator("form.delete .hint").textContent(), /and its 1 memory, for good/);
    await shot("18-renamed-about-to-delete");
    // The box must be ticked: the browser keeps the form until it is.
    await holidays.locator('form.delete button[type="submit"]').click();
    assert.equal(await holidays.count(), 1, "not deleted without the tick");
    await holidays.locator('form.delete input[name="confirm"]').check();
    await holidays.locator('form.delete button[type="submit"]').click();
    await page.waitForURL(/\/collections$/);
    assert.equal(await page.locator('li.collection:has(a:text-is("Holidays"))').count(), 0);
    assert.equal((await page.request.get(`${base}/m/${moved}`)).status(), 404, "its note went with it");
  });

  await step("edit in place: a live preview and [[ completion from titles", async () => {
    await page.goto(`${base}/m/${alpha}`);
    const editAt = await page.locator("#edit").boundingBox();
    const linksAt = await page.locator("section.links").boundingBox();
    assert.ok(editAt.y < linksAt.y, "the editor is at the top, above the links");
    await page.click("#edit summary");
    // The rendered text gives way to the editor.
    await page.locator("#memory-content").waitFor({ state: "hidden" });
    await page.locator("#edit-preview li").first().waitFor();
    const box = page.locator("#edit-content");
    await box.focus();
    await page.keyboard.press("Control+End");
    await page.keyboard.type("\n\n**Checked** with [[Kitchen");
    const offer = page.locator('#wikilink-suggestions button:text-is("Kitchen renovation plan")');
    await offer.waitFor();
    await shot("23-edit-in-place");
    await page.keyboard.press("Tab");
    assert.ok((await box.inputValue()).endsWith("**Checked** with [[Kitchen renovation plan]]"), await box.inputValue());
    await page.locator('#edit-preview a:text-is("Kitchen renovation plan")').waitFor();
    await page.locator('#edit-preview strong:text-is("Checked")').waitFor();
    // Nothing is saved until Save: the memory reads as before.
    await page.goto(`${base}/m/${alpha}`);
    assert.equal(await page.locator('#memory-content a:text-is("Kitchen renovation plan")').count(), 0);
  });

  await step("accessible: no serious or critical axe-core finding on any page, light or dark", async () => {
    const recipes = await page.goto(base + "/collections").then(() =>
      page.getAttribute('li.collection:has(a:text-is("recipes")) a.sharing', "href"));
    const pages = ["/", `/m/${alpha}`, "/search?q=kitchen", "/graph", `/graph?center=${alpha}&depth=2`, "/tasks",
      "/chat", "/collections", recipes, "/status", "/settings", "/api", "/no/such/page"];
    const found = [];
    for (const scheme of ["light", "dark"]) {
      await page.emulateMedia({ colorScheme: scheme });
      for (const path of pages) found.push(...(await seriousViolations(path)).map((f) => `${scheme} ${f}`));
    }
    await page.emulateMedia({ colorScheme: "light" });
    assert.deepEqual(found, [], found.join("\n"));
  });

  await step("readable on a phone, no page wider than 360 px", async () => {
    await page.setViewportSize({ width: 360, height: 780 });
    await page.goto(base + "/collections");
    const sharing = await page.getAttribute('li.collection:has(a:text-is("recipes")) a.sharing', "href");
    for (const path of ["/", "/search?q=kitchen", "/graph", "/tasks", "/chat", "/collections", sharing, "/status", "/settings", "/api", "/no/such/page"]) {
      await page.goto(base + path);
      const overflow = await page.evaluate(() => document.documentElement.scrollWidth - window.innerWidth);
      assert.ok(overflow <= 0, `${path} is ${overflow}px wider than the phone`);
    }
    await page.setViewportSize({ width: 390, height: 844 });
    await page.goto(base + "/settings");
    assert.match(await page.textContent("#model-h"), /Search/);
    await shot("16-settings-phone");
    await page.goto(base + "/");
    await shot("12-phone");
    // Dark, on a phone.
    await page.emulateMedia({ colorScheme: "dark" });
    await page.goto(`${base}/m/${alpha}`);
    await shot("21-memory-dark-phone");
    await page.goto(base + "/collections");
    await shot("22-collections-dark-phone");
    await page.emulateMedia({ colorScheme: "light" });
  });

  await step("every page at 1280 and 390 px, light and dark, without sideways scroll", async () => {
    await page.goto(base + "/collections");
    const sharing = await page.getAttribute('li.collection:has(a:text-is("recipes")) a.sharing', "href");
    const pages = [["home", "/"], ["memory", `/m/${alpha}`], ["search", "/search?q=kitchen"], ["graph", "/graph"],
      ["tasks", "/tasks"], ["collections", "/collections"], ["sharing", sharing], ["status", "/status"], ["settings", "/settings"]];
    for (const [width, height] of [[1280, 800], [390, 844]]) {
      await page.setViewportSize({ width, height });
      for (const scheme of ["light", "dark"]) {
        await page.emulateMedia({ colorScheme: scheme });
        for (const [name, path] of pages) {
          await page.goto(base + path);
          const overflow = await page.evaluate(() => document.documentElement.scrollWidth - window.innerWidth);
          assert.ok(overflow <= 0, `${path} at ${width} px (${scheme}) is ${overflow}px too wide`);
          await shot(`all-${width}-${scheme}-${name}`);
        }
      }
    }
    await page.emulateMedia({ colorScheme: "light" });
    await page.setViewportSize({ width: 1280, height: 800 });
  });

  await step("sign out", async () => {
    await page.click(".signout button");
    await page.waitForURL(/\/signin/);
    await page.goto(base + "/");
    await page.waitForURL(/\/signin/);
    assert.deepEqual(await seriousViolations("/signin"), [], "the sign-in page is accessible");
  });

  assert.deepEqual(consoleErrors, [], `the browser console had errors: ${consoleErrors.join("; ")}`);
  console.log(JSON.stringify({ ok: true, alpha, beta }));
} catch (e) {
  console.error(`FAILED at step "${stepName}": ${e.stack ?? e}`);
  await shot("failure").catch(() => {});
  process.exitCode = 1;
} finally {
  await browser.close();
}
