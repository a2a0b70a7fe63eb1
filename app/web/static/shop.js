// The shop's page: search as you type, "why this result", a session (history and basket, kept
// in this browser's local storage only) that feeds the recommendations, and review sentiment.
// Every request goes to the page's own JSON endpoints (/api/...); a newer request of one kind
// aborts the older, so answers never arrive out of order and the page never waits on a stale one.
"use strict";

(() => {
  const DEBOUNCE_MS = 250;
  const SPINNER_DELAY_MS = 150;
  const RECOMMEND_K = 6;
  const SESSION_KEY = "fusionrank.session.v1";
  const MAX_SESSION = 200; // most recent actions sent to the recommender
  const SIGNALS = {
    similarity: "similarity s",
    feedback: "feedback prediction f",
    lexical: "lexical",
    reranker: "cross-encoder reranker",
  };

  const $ = (id) => document.getElementById(id);
  const page = {
    banner: $("banner"), bannerText: $("banner-text"), retry: $("retry"),
    serverState: $("server-state"),
    form: $("search-form"), query: $("q"), k: $("k"), spinner: $("spinner"),
    searchStatus: $("search-status"), searchError: $("search-error"), results: $("results"),
    recsStatus: $("recs-status"), recs: $("recs"), exclude: $("exclude"),
    basket: $("basket"), basketCount: $("basket-count"), history: $("history"),
    clear: $("clear-session"),
    dialog: $("product"), productTitle: $("product-title"), productMeta: $("product-meta"),
    productDescription: $("product-description"), productReviews: $("product-reviews"),
    review: $("review"), analyse: $("analyse"), sentiment: $("sentiment-result"),
    template: $("card-template"),
  };

  // ---- the session: local storage only ----------------------------------------------------
  function emptySession() {
    return { history: [], basket: [], exclude: true };
  }

  function loadSession() {
    try {
      const stored = JSON.parse(localStorage.getItem(SESSION_KEY));
      if (stored && Array.isArray(stored.history) && Array.isArray(stored.basket)) {
        return { ...emptySession(), ...stored };
      }
    } catch (_) { /* unreadable: start afresh */ }
    return emptySession();
  }

  let session = loadSession();

  function saveSession() {
    localStorage.setItem(SESSION_KEY, JSON.stringify(session));
  }

  function summary(product) {
    return { product_id: product.product_id, title: product.title, price: product.price };
  }

  function remember(product, action) {
    session.history.push({ ...summary(product), action, time: Math.floor(Date.now() / 1000) });
    session.history = session.history.slice(-MAX_SESSION);
    if (action === "basket" && !inBasket(product.product_id)) {
      session.basket.push(summary(product));
    }
    saveSession();
    renderSession();
    refreshRecommendations();
  }

  function inBasket(productId) {
    return session.basket.some((item) => item.product_id === productId);
  }

  // ---- requests: one channel per kind; a new request aborts the one before -----------------
  function channel(onBusy) {
    let controller = null;
    let sequence = 0;
    const request = async (url, init = {}) => {
      controller?.abort();
      controller = new AbortController();
      const mine = ++sequence;
      const spinner = setTimeout(() => onBusy(true), SPINNER_DELAY_MS);
      try {
        const response = await fetch(url, { ...init, signal: controller.signal });
        const body = await response.json().catch(() => ({
          error: "server_error", message: `HTTP ${response.status} without a JSON answer`,
        }));
        return mine === sequence ? { ok: response.ok, status: response.status, body } : null;
      } catch (error) {
        if (error.name === "AbortError" || mine !== sequence) return null;
        return { ok: false, status: 0, body: {
          error: "web_unreachable", message: `the web app does not answer (${error.message})` } };
      } finally {
        clearTimeout(spinner);
        if (mine === sequence) onBusy(false);
      }
    };
    request.cancel = () => { controller?.abort(); sequence += 1; onBusy(false); };
    return request;
  }

  const postJson = (body) => ({
    method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(body),
  });

  const searchRequest = channel((busy) => {
    page.spinner.hidden = !busy;
    page.results.setAttribute("aria-busy", String(busy));
  });
  const recommendRequest = channel((busy) => {
    page.recs.setAttribute("aria-busy", String(busy));
    page.recs.classList.toggle("loading", busy);
  });
  const sentimentRequest = channel((busy) => {
    page.analyse.disabled = busy;
    if (busy) page.sentiment.textContent = "Reading…";
  });
  const healthRequest = channel(() => {});

  // ---- the server's state ------------------------------------------------------------------
  const SERVER_DOWN = new Set(["server_unavailable", "timeout", "web_unreachable"]);

  function showBanner(message) {
    page.bannerText.textContent = message;
    page.banner.hidden = false;
    page.serverState.textContent = "not reachable";
    page.serverState.className = "state bad";
  }

  function hideBanner() {
    page.banner.hidden = true;
  }

  // True when the failure is the server's (banner shown), false when it is the request's.
  function serverFailure(body) {
    if (!SERVER_DOWN.has(body.error)) return false;
    showBanner(`The search server is not answering: ${body.message}`);
    return true;
  }

  async function checkHealth() {
    const answer = await healthRequest("/api/health");
    if (!answer) return false;
    if (!answer.ok) {
      serverFailure(answer.body) || showBanner(answer.body.message);
      return false;
    }
    const health = answer.body;
    if (health.ready) {
      hideBanner();
    } else if (health.models.search === "missing") {
      showBanner(`The server serves no search model: ${health.message}`);
    } else {
      showBanner(`The search server is not ready: ${health.message}`);
    }
    page.serverState.textContent = health.ready ? "ready" : "not ready";
    page.serverState.className = health.ready ? "state good" : "state bad";
    return health.ready;
  }

  // ---- product cards -----------------------------------------------------------------------
  const number = (value) => value.toFixed(4);

  function describe(product) {
    return [
      product.price == null ? null : `Price ${product.price.toFixed(2)}`,
      `id ${product.product_id}`,
      product.category || null,
      product.brand || null,
    ].filter(Boolean).join(" · ");
  }

  function reviewLine(product) {
    if (product.review_sentiment == null) return null;
    const value = product.review_sentiment;
    const word = value > 0 ? "positive" : value < 0 ? "negative" : "neutral";
    return `Review sentiment ${value >= 0 ? "+" : ""}${value.toFixed(2)} (${word}) ` +
      `from ${product.review_count} review${product.review_count === 1 ? "" : "s"}`;
  }

  let cardCount = 0;

  function fillExplanation(card, item) {
    const why = card.querySelector(".why");
    const table = card.querySelector(".why-table");
    if (!item.parts || !item.parts.length) return;
    table.id = `why-${++cardCount}`;
    why.hidden = false;
    why.setAttribute("aria-controls", table.id);
    const rows = item.parts.map((part) => {
      const row = document.createElement("tr");
      row.dataset.signal = part.signal;
      for (const text of [SIGNALS[part.signal] || part.signal, number(part.value),
        number(part.weight), number(part.contribution)]) {
        const cell = document.createElement(row.children.length ? "td" : "th");
        if (!row.children.length) cell.scope = "row";
        cell.textContent = text;
        row.append(cell);
      }
      return row;
    });
    table.tBodies[0].replaceChildren(...rows);
    // The server sums the parts in float64, in this order, and rounds to float32.
    const total = item.parts.reduce((sum, part) => sum + part.contribution, 0);
    const exact = Math.fround(total) === Math.fround(item.score);
    table.querySelector(".total").textContent = number(item.score);
    table.querySelector(".adds-up").textContent = exact
      ? "✓ The parts add up to the served score exactly."
      : "✗ The parts do not add up to the served score.";
    why.addEventListener("click", () => {
      const open = why.getAttribute("aria-expanded") !== "true";
      why.setAttribute("aria-expanded", String(open));
      table.hidden = !open;
    });
  }

  function makeCard(item) {
    const card = page.template.content.firstElementChild.cloneNode(true);
    const product = item.product;
    card.dataset.productId = item.product_id;
    card.querySelector(".title").textContent = product.title;
    card.querySelector(".meta").textContent = describe(product);
    const reviews = reviewLine(product);
    if (reviews) {
      card.querySelector(".reviews").textContent = reviews;
      card.querySelector(".reviews").hidden = false;
    }
    card.querySelector(".score").textContent = `S = ${number(item.score)}`;
    const view = card.querySelector(".view");
    view.setAttribute("aria-label", `View ${product.title}`);
    view.addEventListener("click", () => {
      openProduct(product);
      remember(product, "view");
    });
    const add = card.querySelector(".add");
    add.setAttribute("aria-label", `Add ${product.title} to the basket`);
    if (inBasket(item.product_id)) add.textContent = "In basket ✓";
    add.addEventListener("click", () => {
      remember(product, "basket");
      add.textContent = "In basket ✓";
    });
    fillExplanation(card, item);
    return card;
  }

  // Arrow keys move between the cards of a list (Tab and Enter work as everywhere).
  function arrowNavigation(list) {
    list.addEventListener("keydown", (event) => {
      if (event.key !== "ArrowDown" && event.key !== "ArrowUp") return;
      const buttons = [...list.querySelectorAll(".card .view")];
      const current = buttons.indexOf(event.target.closest(".card")?.querySelector(".view"));
      const next = current + (event.key === "ArrowDown" ? 1 : -1);
      if (next >= 0 && next < buttons.length) {
        buttons[next].focus();
        event.preventDefault();
      } else if (next < 0 && list === page.results) {
        page.query.focus();
        event.preventDefault();
      }
    });
  }

  // ---- search ------------------------------------------------------------------------------
  let debounce = null;

  function showSearchError(message) {
    page.searchError.textContent = message;
    page.searchError.hidden = false;
  }

  function keepQueryInAddress(query) {
    const url = new URL(window.location.href);
    if (query) url.searchParams.set("q", query); else url.searchParams.delete("q");
    window.history.replaceState(null, "", url);
  }

  async function runSearch() {
    clearTimeout(debounce);
    const query = page.query.value;
    keepQueryInAddress(query.trim());
    if (!query.trim()) {
      searchRequest.cancel();
      page.results.replaceChildren();
      page.searchStatus.textContent = "";
      page.searchError.hidden = true;
      return;
    }
    const params = new URLSearchParams({ q: query, k: page.k.value });
    const answer = await searchRequest(`/api/search?${params}`);
    if (!answer) return; // superseded by a newer request
    if (!answer.ok) {
      page.results.replaceChildren();
      page.searchStatus.textContent = "";
      if (serverFailure(answer.body)) {
        showSearchError("No results: the search server is not answering.");
      } else if (answer.body.error === "model_missing") {
        showSearchError(`No search: ${answer.body.message}.`);
      } else {
        showSearchError(answer.body.message); // the contract's or server's message, as is
      }
      return;
    }
    hideBanner();
    page.searchError.hidden = true;
    renderResults(answer.body);
  }

  function renderResults(answer) {
    const status = [];
    if (answer.corrected) {
      const shown = document.createElement("p");
      shown.className = "corrected";
      shown.append("Showing results for ");
      const strong = document.createElement("strong");
      strong.textContent = answer.corrected;
      shown.append(strong);
      status.push(shown);
    }
    const count = document.createElement("p");
    count.textContent = `${answer.hits.length} result${answer.hits.length === 1 ? "" : "s"} ` +
      `for “${answer.query}” (${answer.served_ms.toFixed(1)} ms on the server)`;
    status.push(count);
    page.searchStatus.replaceChildren(...status);
    page.results.replaceChildren(...answer.hits.map(makeCard));
  }

  // ---- recommendations ---------------------------------------------------------------------
  async function refreshRecommendations() {
    const history = session.history.map((e) => ({ product_id: e.product_id, time: e.time }));
    const answer = await recommendRequest("/api/recommend", postJson({
      history, k: RECOMMEND_K, exclude_purchased: page.exclude.checked,
    }));
    if (!answer) return;
    if (!answer.ok) {
      page.recs.replaceChildren();
      if (answer.body.error === "model_missing") {
        page.recsStatus.textContent = "Recommendations are not served by this server " +
          "(its model repository has no recommend model).";
      } else {
        serverFailure(answer.body);
        page.recsStatus.textContent = `No recommendations: ${answer.body.message}`;
      }
      return;
    }
    const result = answer.body;
    const known = history.length - result.unknown_ids;
    page.recsStatus.textContent = !history.length
      ? "Popular products: this is a fresh session. View or add products to make these yours."
      : result.popular
        ? "Popular products: the recommender knows none of what you viewed or added yet."
        : `Based on ${known} product${known === 1 ? "" : "s"} you viewed or added.`;
    page.recs.replaceChildren(...result.items.map(makeCard));
  }

  // ---- session panels ----------------------------------------------------------------------
  function listItem(entry, button) {
    const item = document.createElement("li");
    item.textContent = `${entry.title} (${entry.product_id}) `;
    if (button) item.append(button);
    return item;
  }

  function renderSession() {
    page.basketCount.textContent = String(session.basket.length);
    page.basket.replaceChildren(...session.basket.map((entry) => {
      const remove = document.createElement("button");
      remove.type = "button";
      remove.textContent = "Remove";
      remove.setAttribute("aria-label", `Remove ${entry.title} from the basket`);
      remove.addEventListener("click", () => {
        session.basket = session.basket.filter((b) => b.product_id !== entry.product_id);
        saveSession();
        renderSession();
      });
      return listItem(entry, remove);
    }));
    const seen = new Set();
    const recent = session.history.filter((e) => e.action === "view").reverse()
      .filter((e) => !seen.has(e.product_id) && seen.add(e.product_id)).slice(0, 8);
    page.history.replaceChildren(...recent.map((entry) => listItem(entry)));
    page.exclude.checked = session.exclude;
  }

  // ---- the product dialog and its review sentiment -----------------------------------------
  function openProduct(product) {
    page.dialog.dataset.productId = product.product_id;
    page.productTitle.textContent = product.title;
    page.productMeta.textContent = describe(product);
    page.productDescription.textContent = product.description || "";
    page.productReviews.textContent = reviewLine(product) ||
      "No review sentiment in the catalogue for this product.";
    page.sentiment.replaceChildren();
    sentimentRequest.cancel();
    if (!page.dialog.open) page.dialog.showModal();
    page.review.focus();
  }

  async function analyseReview() {
    const answer = await sentimentRequest("/api/sentiment", postJson({ texts: [page.review.value] }));
    if (!answer) return;
    if (!answer.ok) {
      const note = document.createElement("p");
      note.className = answer.body.error === "model_missing" ? "missing" : "error";
      note.setAttribute("role", "alert");
      note.textContent = answer.body.error === "model_missing"
        ? "Sentiment model not served: this server's model repository has no sentiment model."
        : answer.body.message;
      page.sentiment.replaceChildren(note);
      return;
    }
    const [result] = answer.body.results;
    const label = document.createElement("p");
    label.className = `label ${result.label}`;
    label.textContent = `Sentiment: ${result.label}`;
    const list = document.createElement("ul");
    list.className = "plain probabilities";
    for (const name of answer.body.classes) {
      const item = document.createElement("li");
      const bar = document.createElement("meter");
      bar.min = 0; bar.max = 1; bar.value = result.probabilities[name];
      bar.setAttribute("aria-label", `P(${name})`);
      item.append(`${name} ${(100 * result.probabilities[name]).toFixed(1)} % `, bar);
      list.append(item);
    }
    page.sentiment.replaceChildren(label, list);
  }

  // ---- wiring ------------------------------------------------------------------------------
  page.form.addEventListener("submit", (event) => {
    event.preventDefault();
    runSearch();
  });
  page.query.addEventListener("input", () => {
    clearTimeout(debounce);
    debounce = setTimeout(runSearch, DEBOUNCE_MS);
  });
  page.query.addEventListener("keydown", (event) => {
    if (event.key === "ArrowDown") {
      page.results.querySelector(".card .view")?.focus();
      event.preventDefault();
    }
  });
  page.k.addEventListener("change", runSearch);
  page.exclude.addEventListener("change", () => {
    session.exclude = page.exclude.checked;
    saveSession();
    refreshRecommendations();
  });
  page.clear.addEventListener("click", () => {
    session = emptySession();
    saveSession();
    renderSession();
    for (const add of document.querySelectorAll(".card .add")) add.textContent = "Add to basket";
    refreshRecommendations();
  });
  page.analyse.addEventListener("click", analyseReview);
  page.retry.addEventListener("click", async () => {
    page.bannerText.textContent = "Checking the server…";
    if (await checkHealth()) {
      if (page.query.value.trim()) runSearch();
      refreshRecommendations();
    }
  });
  arrowNavigation(page.results);
  arrowNavigation(page.recs);

  renderSession();
  checkHealth();
  refreshRecommendations();
  if (page.query.value.trim()) runSearch();
})();
