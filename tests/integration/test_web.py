"""The shop in a browser (app/web) on a real Triton server: its JSON endpoints against
the SDK's own answers and the contract's own messages, the page in headless chromium (results,
"why this result", a session feeding recommendations across a reload, review sentiment, missing
models, a stopped server), and `fusionrank web` / `fusionrank serve` starting and stopping it.

FUSIONRANK_SCREENSHOTS=docs/screenshots saves the page's main states (tests/support/browser.py).
"""

from __future__ import annotations

import json
import signal
import socket
from collections.abc import Iterator
from dataclasses import asdict

import httpx
import numpy as np
import pytest
from tritonclient.utils import InferenceServerException

from fusionrank.app.serve import Ports, free_port
from fusionrank.app.web.app import WebSettings, create_app
from fusionrank.app.web.bodies import BODY_LIMITS, INLINE_BYTES
from fusionrank.app.web.errors import from_sdk
from fusionrank.app.web.server import WebServer
from fusionrank.client import (
    FusionRankClient,
    FusionRankError,
    InvalidRequestError,
    RequestTimeoutError,
    ServerOverloadedError,
    ServerUnavailableError,
)
from fusionrank.client.errors import from_triton
from fusionrank.core.contract import DEFAULT_K, MAX_K, RequestError, check_k
from fusionrank.core.recommend.contract import MAX_HISTORY, MAX_PRODUCT_ID_CHARS, check_history
from fusionrank.core.search.contract import MAX_QUERY_CHARS, check_query
from fusionrank.core.sentiment.contract import (
    MAX_REVIEW_BATCH,
    MAX_REVIEW_CHARS,
    check_review,
    check_review_batch,
)
from tests.support import shop
from tests.support.browser import chromium, screenshot, wait_for
from tests.support.catalogue import running_server
from tests.support.processes import fusionrank_process
from tests.support.reviews import TEXTS

RECOMMEND_K = 6  # what the page asks for (shop.js)


@pytest.fixture(scope="module")
def web(triton_server) -> Iterator[WebServer]:
    with WebServer(WebSettings(triton_server.grpc_url, timeout_s=30), port=0) as server:
        yield server


@pytest.fixture(scope="module")
def api(web) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=web.url, timeout=30) as client:
        yield client


@pytest.fixture(scope="module")
def sdk(triton_server) -> Iterator[FusionRankClient]:
    with FusionRankClient(triton_server.grpc_url, timeout_s=30) as client:
        yield client


@pytest.fixture(scope="module")
def browser():
    with chromium() as driver:
        yield driver


def fresh_page(driver, url: str):
    """The page with an empty session, once its first recommendations (or their absence) show."""
    driver.get(url)
    driver.execute_script("window.localStorage.clear()")
    driver.get(url)
    wait_for(driver, lambda d: d.find_element("id", "recs-status").text, "the recommendations")
    return driver


@pytest.fixture
def page(browser, web):
    return fresh_page(browser, web.url)


# ---- the JSON endpoints -------------------------------------------------------------------------

def ids(items: list[dict]) -> list[str]:
    return [item["product_id"] for item in items]


def test_search_explains_every_score_exactly_and_shows_the_correction(api, sdk):
    answer = api.get("/api/search", params={"q": "gardn hose", "k": 5}).json()
    served = sdk.search("gardn hose", k=5, products=True)
    assert answer["corrected"] == "garden hose"
    assert ids(answer["hits"]) == [hit.product_id for hit in served]
    assert ids(answer["hits"])[0] == "A-HOSE"
    assert [hit["score"] for hit in answer["hits"]] == [hit.score for hit in served]
    assert answer["hits"][0]["product"] == asdict(served[0].product)
    for hit in answer["hits"]:
        assert [part["signal"] for part in hit["parts"]] == ["similarity", "feedback", "lexical"]
        total = sum(part["contribution"] for part in hit["parts"])  # float64, in order
        assert np.float32(total) == np.float32(hit["score"])
    spelt = api.get("/api/search", params={"q": "garden hose", "k": 5}).json()
    assert spelt["corrected"] is None


def test_recommend_equals_the_sdk_and_says_when_it_is_the_popular_list(api, sdk):
    fresh = api.post("/api/recommend", json={"history": [], "k": 4}).json()
    assert fresh["popular"] is True and fresh["unknown_ids"] == 0
    assert ids(fresh["items"]) == [item.product_id for item in sdk.recommend([], k=4).items]

    theme = [pid for pid in shop.product_ids() if shop.theme_of(pid) == 2]
    history = [{"product_id": theme[0], "time": 0}, {"product_id": "A-DRILL", "time": 0}]
    mine = api.post("/api/recommend", json={"history": history, "k": 4,
                                            "exclude_purchased": True}).json()
    expected = sdk.recommend([theme[0], "A-DRILL"], k=4, exclude_purchased=True)
    assert mine["popular"] is False and mine["unknown_ids"] == 1
    assert [(item["product_id"], item["score"]) for item in mine["items"]] == \
        [(item.product_id, item.score) for item in expected.items]
    assert theme[0] not in ids(mine["items"])

    unknown = api.post("/api/recommend", json={"history": [{"product_id": "A-DRILL"}]}).json()
    assert unknown["popular"] is True and unknown["unknown_ids"] == 1


def test_sentiment_equals_the_sdk(api, sdk):
    answer = api.post("/api/sentiment", json={"texts": TEXTS[:3]}).json()
    served = sdk.sentiment(TEXTS[:3])
    assert answer["classes"] == ["negative", "neutral", "positive"]
    assert [r["label"] for r in answer["results"]] == [r.label for r in served]
    assert [r["probabilities"] for r in answer["results"]] == [r.probabilities for r in served]


def test_health_names_every_served_model_and_no_address(api, triton_server):
    health = api.get("/api/health")
    assert health.json() == {"ready": True, "message": None, "models": {
        "search": "ready", "recommend": "ready", "sentiment": "ready"}}
    port = triton_server.grpc_url.rsplit(":", 1)[1]
    assert port not in health.text and "127.0.0.1" not in health.text


def test_a_large_valid_body_is_parsed_off_the_event_loop_with_the_same_answer(api, sdk):
    """A history of MAX_HISTORY entries (padded with unknown ids) is over INLINE_BYTES, so the
    worker process parses and checks it: the answer is the SDK's for the same history."""
    theme = [pid for pid in shop.product_ids() if shop.theme_of(pid) == 2]
    history = [theme[0], *(f"UNKNOWN-{n:05d}" for n in range(MAX_HISTORY - 1))]
    body = {"history": [{"product_id": pid, "time": 0} for pid in history], "k": 4}
    assert len(json.dumps(body)) > INLINE_BYTES
    answer = api.post("/api/recommend", json=body).json()
    expected = sdk.recommend(history, k=4)
    assert answer["unknown_ids"] == MAX_HISTORY - 1
    assert ids(answer["items"]) == [item.product_id for item in expected.items]
    # Bad input found in the worker is the contract's 422, as in place.
    many = {"history": [{"product_id": "x"}] * (MAX_HISTORY + 1)}
    assert len(json.dumps(many)) > INLINE_BYTES
    assert api.post("/api/recommend", json=many).json() == {
        "error": "invalid_argument", "field": "history", "message": contract_message(
            check_history, np.array(["x"] * (MAX_HISTORY + 1)), None)}


def raw_post(url: str, path: str, headers: dict[str, str], body: bytes = b"") -> tuple[int, dict]:
    """POST with a socket: only the headers and `body` are sent (a declared Content-Length is
    not honoured), then the answer's status and JSON are read."""
    host, port = url.removeprefix("http://").split(":")
    lines = [f"POST {path} HTTP/1.1", f"Host: {host}", "Content-Type: application/json",
             *(f"{name}: {value}" for name, value in headers.items()), "", ""]
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        sock.sendall("\r\n".join(lines).encode() + body)
        answer = b""
        while b"\r\n\r\n" not in answer or not answer.rstrip().endswith(b"}"):
            chunk = sock.recv(65536)
            if not chunk:
                break
            answer += chunk
    head, _, payload = answer.partition(b"\r\n\r\n")
    return int(head.split()[1]), json.loads(payload)


def test_a_100_mb_body_is_refused_413_before_it_is_read(web):
    status, answer = raw_post(web.url, "/api/recommend", {"Content-Length": str(100_000_000)},
                              b'{"history": [')
    assert status == 413
    limit = BODY_LIMITS["/api/recommend"]
    assert answer == {"error": "too_large", "field": "body", "message":
                      f"the request body is over this endpoint's limit of {limit:,} bytes"}


def test_a_body_over_the_limit_is_413_with_or_without_content_length(api):
    limit = BODY_LIMITS["/api/sentiment"]
    declared = api.post("/api/sentiment", content=b" " * (limit + 1),
                        headers={"Content-Type": "application/json"})
    assert declared.status_code == 413 and declared.json()["error"] == "too_large"

    def chunks() -> Iterator[bytes]:  # no Content-Length: sent chunked
        for _ in range(4 * limit // 65536):
            yield b" " * 65536

    streamed = api.post("/api/sentiment", content=chunks(),
                        headers={"Content-Type": "application/json"})
    assert "content-length" not in streamed.request.headers
    assert streamed.status_code == 413 and streamed.json()["field"] == "body"
    # Within the limit, the same endpoint answers as before (the connection kept working).
    assert api.post("/api/sentiment", json={"texts": ["Lovely"]}).status_code == 200


def test_the_largest_request_the_contract_allows_is_under_the_limit(api):
    texts = ["é" * MAX_REVIEW_CHARS] * MAX_REVIEW_BATCH  # json.dumps writes each as 6 bytes
    body = json.dumps({"texts": texts}).encode()
    assert len(body) <= BODY_LIMITS["/api/sentiment"]
    response = api.post("/api/sentiment", content=body,
                        headers={"Content-Type": "application/json"})
    assert response.status_code == 200 and len(response.json()["results"]) == MAX_REVIEW_BATCH


def contract_message(check, *args) -> str:
    """What the gRPC contract's own check says about this input."""
    with pytest.raises(RequestError) as error:
        check(*args)
    return str(error.value)


def get(path: str, params: dict) -> tuple[str, str, dict]:
    return "GET", path, {"params": params}


def post(path: str, body: dict) -> tuple[str, str, dict]:
    return "POST", path, {"json": body}


LONG_QUERY = "x" * (MAX_QUERY_CHARS + 1)
TOO_MANY = [{"product_id": "10000"}] * (MAX_HISTORY + 1)
LONG_ID = "i" * (MAX_PRODUCT_ID_CHARS + 1)
LONG_REVIEW = "y" * (MAX_REVIEW_CHARS + 1)
BAD = {  # request, the field named, the contract's message about it
    "empty query": (get("/api/search", {"q": " ", "k": 3}), "q",
                    lambda: contract_message(check_query, " ")),
    "query over the limit": (get("/api/search", {"q": LONG_QUERY}), "q",
                             lambda: contract_message(check_query, LONG_QUERY)),
    "k zero": (get("/api/search", {"q": "teapot", "k": 0}), "k",
               lambda: contract_message(check_k, [0])),
    "k over MAX_K": (get("/api/search", {"q": "teapot", "k": MAX_K + 1}), "k",
                     lambda: contract_message(check_k, [MAX_K + 1])),
    "k not a number": (get("/api/search", {"q": "teapot", "k": "ten"}), "k",
                       lambda: "k: Input should be a valid integer, unable to parse string as "
                               "an integer"),
    "history over MAX_HISTORY": (post("/api/recommend", {"history": TOO_MANY}), "history",
                                 lambda: contract_message(
                                     check_history, np.array(["10000"] * (MAX_HISTORY + 1)),
                                     None)),
    "product id too long": (post("/api/recommend", {"history": [{"product_id": LONG_ID}]}),
                            "history", lambda: contract_message(check_history,
                                                                np.array([LONG_ID]), None)),
    "recommend k zero": (post("/api/recommend", {"history": [], "k": 0}), "k",
                         lambda: contract_message(check_k, [0])),
    "no reviews": (post("/api/sentiment", {"texts": []}), "texts",
                   lambda: contract_message(check_review_batch, 0)),
    "too many reviews": (post("/api/sentiment", {"texts": ["ok"] * (MAX_REVIEW_BATCH + 1)}),
                         "texts", lambda: contract_message(check_review_batch,
                                                           MAX_REVIEW_BATCH + 1)),
    "review over the limit": (post("/api/sentiment", {"texts": ["fine", LONG_REVIEW]}), "texts",
                              lambda: contract_message(check_review, LONG_REVIEW, 1)),
    "texts missing": (post("/api/sentiment", {}), "texts",
                      lambda: "texts: Field required"),
}


def assert_rejected(client: httpx.Client, case: str) -> None:
    (method, path, arguments), field, message = BAD[case]
    response = client.request(method, path, **arguments)
    assert response.status_code == 422
    assert response.json() == {"error": "invalid_argument", "field": field, "message": message()}


@pytest.mark.parametrize("case", BAD, ids=list(BAD))
def test_bad_input_is_422_with_the_contracts_message_naming_the_field(api, case):
    assert_rejected(api, case)


@pytest.fixture(scope="module")
def serverless_api() -> Iterator[httpx.Client]:
    """The web app (in process) over an address where no Triton listens."""
    from fastapi.testclient import TestClient

    app = create_app(WebSettings(f"127.0.0.1:{free_port()}", timeout_s=5))
    with TestClient(app) as client:
        yield client


@pytest.mark.parametrize("case", BAD, ids=list(BAD))
def test_bad_input_is_rejected_before_any_call_to_the_server(serverless_api, case):
    assert_rejected(serverless_api, case)


def test_an_unreachable_server_is_503_and_health_says_so(serverless_api):
    search = serverless_api.get("/api/search", params={"q": "teapot"})
    assert search.status_code == 503
    assert search.json()["error"] == "server_unavailable"
    assert search.json()["message"].startswith("cannot reach a Triton server: ")
    assert "127.0.0.1" not in search.text
    health = serverless_api.get("/api/health")
    assert health.json()["ready"] is False
    assert health.json()["models"] == dict.fromkeys(("search", "recommend", "sentiment"),
                                                    "unavailable")
    assert health.json()["message"].startswith("search: cannot reach a Triton server")
    assert "127.0.0.1" not in health.text
    page = serverless_api.get("/")
    assert page.status_code == 200 and 'aria-live="polite"' in page.text


def test_the_limits_are_the_contracts_in_the_openapi_page(api):
    schema = api.get("/openapi.json").json()
    assert set(schema["paths"]) == {"/api/search", "/api/recommend", "/api/sentiment",
                                    "/api/health"}
    k = next(p for p in schema["paths"]["/api/search"]["get"]["parameters"] if p["name"] == "k")
    assert (k["schema"]["minimum"], k["schema"]["maximum"], k["schema"]["default"]) == \
        (1, MAX_K, DEFAULT_K)
    # The bodies the routes parse themselves (off the event loop) are still documented.
    body = schema["paths"]["/api/recommend"]["post"]["requestBody"]["content"]
    assert body["application/json"]["schema"] == {"$ref": "#/components/schemas/RecommendRequest"}
    assert {"RecommendRequest", "HistoryEntry", "SentimentRequest"} <= \
        set(schema["components"]["schemas"])
    assert "413" in schema["paths"]["/api/sentiment"]["post"]["responses"]
    assert api.get("/docs").status_code == 200


def test_sdk_errors_become_the_pages_states():
    url = "127.0.0.1:1"
    cases = [(InvalidRequestError("QUERY[0] is empty"), 400, "invalid_argument"),
             (ServerUnavailableError("cannot reach"), 503, "server_unavailable"),
             (ServerOverloadedError("refused: Exceeds maximum queue size"), 503, "overloaded"),
             (RequestTimeoutError("no answer"), 504, "timeout"),
             (from_triton(InferenceServerException(
                 "Request for unknown model: 'sentiment' is not found",
                 status="StatusCode.NOT_FOUND"), url), 503, "model_missing"),
             (FusionRankError("StatusCode.INTERNAL from x: boom"), 502, "server_error")]
    for error, status, kind in cases:
        failure = from_sdk(error, "sentiment", url)
        assert (failure.status, failure.error) == (status, kind)
    missing = from_sdk(cases[4][0], "sentiment", url).message
    assert missing.startswith("the server serves no 'sentiment' model: train one with "
                              "`fusionrank train-sentiment`")
    assert url not in missing


# ---- the page in a browser ----------------------------------------------------------------------

def card_ids(driver, listing: str) -> list[str]:
    return [card.get_attribute("data-product-id")
            for card in driver.find_elements("css selector", f"#{listing} .card")]


def card(driver, listing: str, product_id: str):
    return driver.find_element("css selector", f'#{listing} .card[data-product-id="{product_id}"]')


def search_for(driver, query: str, first: str) -> None:
    box = driver.find_element("id", "q")
    box.clear()
    box.send_keys(query)  # no Enter: the page answers as the shopper types
    wait_for(driver, lambda d: card_ids(d, "results")[:1] == [first],
             f"{first} first for {query!r}")


def text_of(driver, element_id: str) -> str:
    return driver.find_element("id", element_id).text


def test_typing_shows_results_and_why_each_one_scores_what_it_does(page, api):
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.keys import Keys

    search_for(page, "gardn hose", "A-HOSE")
    expected = api.get("/api/search", params={"q": "gardn hose", "k": DEFAULT_K}).json()["hits"]
    wait_for(page, lambda d: card_ids(d, "results") == ids(expected), "all the served results")
    assert "Showing results for garden hose" in text_of(page, "search-status")
    assert "id A-HOSE" in card(page, "results", "A-HOSE").text
    assert "garden" in card(page, "results", "A-HOSE").text  # its category
    screenshot(page, "results")

    first = card(page, "results", "A-HOSE")
    why, table = (first.find_element("css selector", s) for s in (".why", ".why-table"))
    assert not table.is_displayed() and why.get_attribute("aria-expanded") == "false"
    # The keyboard alone: ↓ from the search box to the first card, Tab to "why", Enter opens it.
    page.find_element("id", "q").send_keys(Keys.ARROW_DOWN)
    assert page.switch_to.active_element == first.find_element("css selector", ".view")
    ActionChains(page).send_keys(Keys.TAB, Keys.TAB, Keys.ENTER).perform()
    wait_for(page, lambda d: table.is_displayed(), "the score's parts")
    assert why.get_attribute("aria-expanded") == "true"
    rows = table.find_elements("css selector", "tbody tr")
    assert [row.get_attribute("data-signal") for row in rows] == ["similarity", "feedback",
                                                                  "lexical"]
    for row, part in zip(rows, expected[0]["parts"], strict=True):
        cells = [cell.text for cell in row.find_elements("css selector", "td")]
        assert cells == [f"{part[key]:.4f}" for key in ("value", "weight", "contribution")]
    assert table.find_element("css selector", ".total").text == f"{expected[0]['score']:.4f}"
    assert table.find_element("css selector", ".adds-up").text == \
        "✓ The parts add up to the served score exactly."
    screenshot(page, "why")


def test_views_and_the_basket_feed_the_recommendations_and_survive_a_reload(page, sdk):
    status = lambda d: text_of(d, "recs-status")  # noqa: E731
    wait_for(page, lambda d: "fresh session" in status(d), "a fresh session's popular products")
    popular = [i.product_id for i in sdk.recommend([], k=RECOMMEND_K, exclude_purchased=True).items]
    wait_for(page, lambda d: card_ids(d, "recs") == popular, "the popular products")

    search_for(page, "cordless drill", "A-DRILL")
    card(page, "results", "A-DRILL").find_element("css selector", ".view").click()
    dialog = page.find_element("id", "product")
    wait_for(page, lambda d: dialog.is_displayed(), "the product's panel")
    assert text_of(page, "product-title") == "Cordless power drill 18V with two lithium batteries"
    dialog.find_element("css selector", ".close-row button").click()
    # The recommender's shop does not sell the drill: still the popular products, and it says so.
    wait_for(page, lambda d: "knows none of what you viewed" in status(d), "an unknown history")

    chosen = card_ids(page, "recs")[0]
    card(page, "recs", chosen).find_element("css selector", ".add").click()
    mine = [i.product_id for i in sdk.recommend(["A-DRILL", chosen], k=RECOMMEND_K,
                                                exclude_purchased=True).items]
    wait_for(page, lambda d: card_ids(d, "recs") == mine and "Based on 1 product" in status(d),
             "recommendations re-ranked for the basket")
    assert mine != popular and chosen not in mine
    assert text_of(page, "basket-count") == "1" and f"({chosen})" in text_of(page, "basket")
    assert "(A-DRILL)" in text_of(page, "history")
    screenshot(page, "recommendations")

    page.refresh()
    wait_for(page, lambda d: card_ids(d, "recs") == mine, "the same recommendations after a reload")
    assert text_of(page, "basket-count") == "1" and f"({chosen})" in text_of(page, "basket")
    assert "Based on 1 product" in status(page)
    stored = page.execute_script("return JSON.parse(localStorage.getItem('fusionrank.session.v1'))")
    assert [entry["product_id"] for entry in stored["history"]] == ["A-DRILL", chosen]


def open_product(driver, query: str, product_id: str):
    search_for(driver, query, product_id)
    card(driver, "results", product_id).find_element("css selector", ".view").click()
    wait_for(driver, lambda d: d.find_element("id", "product").is_displayed(), "the product panel")


def test_a_pasted_review_gets_its_sentiment(page, sdk):
    open_product(page, "teapot", "A-TEAPOT")
    review = TEXTS[1]
    page.find_element("id", "review").send_keys(review)
    page.find_element("id", "analyse").click()
    expected = sdk.sentiment([review])[0]
    wait_for(page, lambda d: "Sentiment:" in text_of(d, "sentiment-result"), "the sentiment")
    shown = text_of(page, "sentiment-result")
    assert f"Sentiment: {expected.label}" in shown
    for name, probability in expected.probabilities.items():
        assert f"{name} {100 * probability:.1f} %" in shown
    screenshot(page, "sentiment")


def test_a_query_over_the_limit_shows_the_contracts_message(page):
    search_for(page, "wool scarf", "A-SCARF")
    page.find_element("id", "q").send_keys("x" * MAX_QUERY_CHARS)
    message = contract_message(check_query, "wool scarf" + "x" * MAX_QUERY_CHARS)
    wait_for(page, lambda d: text_of(d, "search-error") == message, "the contract's message")
    assert card_ids(page, "results") == []


@pytest.mark.server
def test_missing_models_and_a_stopped_server_are_shown_plainly(browser, search_repository,
                                                               tmp_path):
    """A second Triton serving search alone (the pretrained encoder), then stopped."""
    with running_server(search_repository, tmp_path / "triton.log") as alone, \
            WebServer(WebSettings(alone.grpc_url, timeout_s=5), port=0) as web:
        page = fresh_page(browser, web.url)
        wait_for(page, lambda d: text_of(d, "server-state") == "ready", "a ready server")
        assert "not served by this server" in text_of(page, "recs-status")
        search_for(page, "kitchen sink", "A-SINK")
        sink = card(page, "results", "A-SINK")
        sink.find_element("css selector", ".why").click()
        rows = sink.find_elements("css selector", ".why-table tbody tr")
        assert [r.get_attribute("data-signal") for r in rows] == ["similarity"]
        assert rows[0].find_elements("css selector", "td")[1].text == "1.0000"  # its weight
        assert sink.find_element("css selector", ".adds-up").text.startswith("✓")

        sink.find_element("css selector", ".view").click()
        page.find_element("id", "review").send_keys("Lovely sink")
        page.find_element("id", "analyse").click()
        wait_for(page, lambda d: "Sentiment model not served" in text_of(d, "sentiment-result"),
                 "the missing sentiment model")
        page.find_element("css selector", "#product .close-row button").click()
        assert not page.find_element("id", "banner").is_displayed()

        alone.stop()
        page.find_element("id", "q").send_keys(" faucet")
        wait_for(page, lambda d: d.find_element("id", "banner").is_displayed(), "the banner")
        assert "not answering" in text_of(page, "banner-text")
        assert text_of(page, "search-error") == "No results: the search server is not answering."
        screenshot(page, "error")
        page.find_element("id", "retry").click()
        wait_for(page, lambda d: "is not ready" in text_of(d, "banner-text"), "a failed retry")
        assert text_of(page, "server-state") == "not ready"


# ---- the commands -------------------------------------------------------------------------------

@pytest.mark.server
def test_serve_starts_the_shop_beside_triton_and_sigterm_stops_both(search_repository):
    ports, web_port = Ports.free(), free_port()
    with fusionrank_process("serve", "--repository", str(search_repository),
                            "--grpc-port", str(ports.grpc), "--http-port", str(ports.http),
                            "--metrics-port", str(ports.metrics), "--web-port", str(web_port),
                            ready=f"the shop http://127.0.0.1:{web_port}") as serve:
        assert f"gRPC 127.0.0.1:{ports.grpc}" in serve.output()
        shop_url = f"http://127.0.0.1:{web_port}"
        hits = httpx.get(f"{shop_url}/api/search", params={"q": "kitchen sink", "k": 1},
                         timeout=30).json()["hits"]
        assert [hit["product_id"] for hit in hits] == ["A-SINK"]
        serve.process.send_signal(signal.SIGTERM)
        assert serve.process.wait(timeout=60) == 0
    with pytest.raises(httpx.ConnectError):
        httpx.get(shop_url, timeout=5)
    assert "successfully unloaded" in serve.output()  # Triton's own shutdown


@pytest.mark.server
def test_web_command_serves_the_page_over_a_running_server(triton_server):
    port = free_port()
    with fusionrank_process("web", "--url", triton_server.grpc_url, "--port", str(port),
                            ready=f"the shop: http://127.0.0.1:{port}") as web:
        page = httpx.get(f"http://127.0.0.1:{port}/", timeout=30)
        assert page.status_code == 200 and triton_server.grpc_url not in page.text
        assert '<label for="q">' in page.text
        web.process.send_signal(signal.SIGTERM)
        assert web.process.wait(timeout=30) == 0
