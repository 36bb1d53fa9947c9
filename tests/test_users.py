"""A server shared by several people: each user acts in a workspace of their own, and cannot see, stop, resume,
chat with, compare or vote into anyone else's (studio/identity.py, pipelines/users.py)."""

import os
import time

import pytest

from tests.conftest import TINY_ROWS, free_port, tiny_config, wait_for, write_jsonl

LOGINS = {"alice": "wonderland", "bob": "builder", "root": "admin-password"}


@pytest.fixture(scope="module")
def team_server(tmp_path_factory):
    """An app with three logins (a team server): alice, bob, and root, its admin."""
    from studio.app import launch_app

    root = tmp_path_factory.mktemp("team-root")
    app = launch_app(root, port=free_port(), logins=LOGINS, per_user=True, admins=frozenset({"root"}),
                     prevent_thread_lock=True)
    yield app.local_url, root
    app.close()


def _client(url: str, user: str):
    from gradio_client import Client
    return Client(url, auth=(user, LOGINS[user]), verbose=False)


def _upload_tiny(client, tmp_path, name: str) -> dict:
    from gradio_client import handle_file
    path = write_jsonl(tmp_path / f"{name}.jsonl", TINY_ROWS)
    return client.predict(handle_file(str(path)), name, api_name="/upload_dataset")


def _refused(call, *words: str) -> str:
    from gradio_client.exceptions import AppError
    with pytest.raises(AppError) as error:
        call()
    message = str(error.value)
    assert "Traceback" not in message and all(word in message for word in words), message
    return message


def test_two_users_each_see_only_their_own_runs_datasets_and_votes(team_server, tiny_model, tmp_path):
    url, root = team_server
    alice, bob = _client(url, "alice"), _client(url, "bob")
    assert _upload_tiny(alice, tmp_path, "alice-data")["saved"]
    assert _upload_tiny(bob, tmp_path, "bob-data")["saved"]
    config = tiny_config(tiny_model, max_steps=2, save_steps=1)
    alice_run = alice.predict("name: alice-run\n" + config.replace("tiny.jsonl", "alice-data"), api_name="/start_run")
    bob_run = bob.predict("name: bob-run\n" + config.replace("tiny.jsonl", "bob-data"), api_name="/start_run")
    for client, run_id in ((alice, alice_run), (bob, bob_run)):
        status = wait_for(lambda: (s := client.predict(run_id, api_name="/run_status"))["status"]
                          in ("completed", "failed") and s, timeout=180, what=f"run {run_id} to end")
        assert status["status"] == "completed", status

    # Each workspace holds its user's own things, on disk where the layout says.
    assert (root / "users" / "user-alice" / "runs" / alice_run).is_dir()
    assert (root / "users" / "user-bob" / "runs" / bob_run).is_dir()
    assert not [p for p in (root / "runs").glob("*") if not p.name.startswith(".")], "no run in the server's own"

    assert [r["run_id"] for r in alice.predict(api_name="/list_runs")] == [alice_run]
    assert [r["run_id"] for r in bob.predict(api_name="/list_runs")] == [bob_run]
    alice_names = {d["name"] for d in alice.predict(api_name="/list_datasets")}
    assert "alice-data" in alice_names and "bob-data" not in alice_names
    assert f"{alice_run}/final" in alice.predict(api_name="/list_checkpoints")
    assert not [c for c in bob.predict(api_name="/list_checkpoints") if c.startswith(alice_run)]

    # Bob, guessing Alice's run id, learns only that he has no such run.
    for endpoint, arguments in (("/run_status", (alice_run,)), ("/stop_run", (alice_run,)),
                                ("/resume_run", (alice_run,)), ("/run_metrics", (alice_run,)),
                                ("/run_samples", (alice_run,))):
        _refused(lambda: bob.predict(*arguments, api_name=endpoint), "There is no run", alice_run)
    greedy = {"max_new_tokens": 4, "temperature": 0}
    _refused(lambda: bob.predict(f"{alice_run}/final", "Hi", [], greedy, api_name="/chat"), alice_run)
    _refused(lambda: bob.predict([f"{alice_run}/final", "smollm2-135m-instruct"], "Hi", greedy,
                                 api_name="/compare"), alice_run)
    _refused(lambda: bob.predict("alice-data", str(tiny_model), 2, api_name="/preview_dataset"), "alice-data")
    alice_folder = root / "users" / "user-alice" / "runs" / alice_run / "final"
    _refused(lambda: bob.predict(str(alice_folder), api_name="/describe_model"), "not")
    _refused(lambda: bob.predict(str(alice_folder), "Hi", [], greedy, api_name="/chat"), "not")
    assert alice.predict(f"{alice_run}/final", "Hi", [], greedy, api_name="/chat") is not None

    # A vote goes into the voter's own dataset, which the other user neither sees nor can add to.
    vote = alice.predict("team-votes", "Say hi", ["Hi!", "Go away."], [f"{alice_run}/final", "smollm2-135m-instruct"],
                         [1, 2], api_name="/vote")
    assert vote["added_rows"] == 1
    assert (root / "users" / "user-alice" / "datasets").is_dir()
    assert "team-votes" not in {d["name"] for d in bob.predict(api_name="/list_datasets")}
    bob.predict("team-votes", "Say hi", ["Yo", "No"], ["smollm2-135m-instruct", "smollm2-135m-instruct"], [1, 2],
                api_name="/vote")
    assert [d["rows"] for d in alice.predict(api_name="/list_datasets") if d["name"] == "team-votes"] == [1]


def test_a_visitor_without_login_is_refused(team_server):
    import httpx
    url, _ = team_server
    response = httpx.post(url.rstrip("/") + "/gradio_api/call/list_runs", json={"data": []})
    assert response.status_code in (401, 403), response.text


def test_an_admin_acts_in_any_users_workspace(team_server, tmp_path):
    from gradio_client import Client

    from studio.identity import ACTING_AS_COOKIE
    url, root = team_server
    _upload_tiny(_client(url, "alice"), tmp_path, "alices-notes")
    admin = _client(url, "root")
    assert "alices-notes" not in {d["name"] for d in admin.predict(api_name="/list_datasets")}, "its own, at first"
    acting = Client(url, auth=("root", LOGINS["root"]), verbose=False)
    acting.cookies[ACTING_AS_COOKIE] = "user-alice"
    assert "alices-notes" in {d["name"] for d in acting.predict(api_name="/list_datasets")}
    # The same cookie from a user who is not an admin changes nothing.
    bob = _client(url, "bob")
    bob.cookies[ACTING_AS_COOKIE] = "user-alice"
    assert "alices-notes" not in {d["name"] for d in bob.predict(api_name="/list_datasets")}


@pytest.fixture(scope="module")
def public_demo(tmp_path_factory):
    """A public demo: no logins, each visitor in a sandbox of their own."""
    from studio.app import launch_app

    root = tmp_path_factory.mktemp("demo-root")
    app = launch_app(root, port=free_port(), per_user=True, sandboxes=True, prevent_thread_lock=True)
    yield app.local_url, root
    app.close()


def test_two_anonymous_sessions_get_two_sandboxes(public_demo, tmp_path):
    from gradio_client import Client
    url, root = public_demo
    first, second = Client(url, verbose=False), Client(url, verbose=False)
    _upload_tiny(first, tmp_path, "first-visitor")
    assert "first-visitor" in {d["name"] for d in first.predict(api_name="/list_datasets")}
    assert "first-visitor" not in {d["name"] for d in second.predict(api_name="/list_datasets")}
    sandboxes = sorted(p.name for p in (root / "users").iterdir())
    assert len(sandboxes) == 2 and all(name.startswith("sandbox-") for name in sandboxes), sandboxes


def test_a_browser_keeps_its_sandbox_across_reloads_through_its_cookie(public_demo):
    import httpx

    from studio.identity import SANDBOX_COOKIE
    url, _ = public_demo
    with httpx.Client() as browser:
        first = browser.get(url)
        token = first.cookies.get(SANDBOX_COOKIE)
        assert token and len(token) >= 30
        assert "HttpOnly" in first.headers["set-cookie"]
        browser.get(url)
        assert browser.cookies.get(SANDBOX_COOKIE) == token, "a reload keeps the sandbox"
    with httpx.Client() as other:
        assert other.get(url).cookies.get(SANDBOX_COOKIE) != token


def test_sandboxes_unused_for_a_day_are_deleted_but_not_logged_in_users(tmp_path):
    from pipelines import users
    old = users.user_workspace(tmp_path, users.sandbox_id("old-token"))
    fresh = users.user_workspace(tmp_path, users.sandbox_id("fresh-token"))
    alice = users.user_workspace(tmp_path, users.user_id("user", "alice"))
    users.touch(fresh)
    for folder in (old, alice):
        (folder / users.LAST_SEEN_FILE).touch()
        day_ago = time.time() - users.SANDBOX_LIFETIME_S - 60
        os.utime(folder / users.LAST_SEEN_FILE, (day_ago, day_ago))
        os.utime(folder, (day_ago, day_ago))
    assert users.expire_sandboxes(tmp_path) == [old.name]
    assert not old.exists() and fresh.exists() and alice.exists()


def test_a_user_may_name_no_folder_of_the_server_but_their_own(tmp_path):
    from pipelines import users
    alice, bob = users.user_workspace(tmp_path, "user-alice"), users.user_workspace(tmp_path, "user-bob")
    assert users.may_read(alice / "runs" / "x" / "final", alice)
    assert not users.may_read(bob / "runs" / "x" / "final", alice)
    assert not users.may_read(alice / ".." / "user-bob", alice)
    assert not users.may_read(tmp_path / "logs" / "server.log", alice)
    assert users.may_read(tmp_path.parent / "some-base-model", alice)
    assert users.may_read(bob / "runs", tmp_path), "the one user (or the root) reads everything"


def test_user_ids_are_safe_folder_names_and_tell_lookalike_names_apart():
    from pipelines import users
    from pipelines.paths import check_name
    assert users.user_id("user", "alice") == "user-alice"
    ids = {users.user_id("user", name) for name in ("Al ice", "al-ice", "al/ice", "../..", "알리스", "")}
    assert len(ids) == 6
    for id_ in ids:
        check_name(id_, "user id")
    assert users.sandbox_id("a") != users.sandbox_id("b")


def test_the_sandbox_token_is_not_the_folder_name():
    from pipelines import users
    token = "secret-token-of-a-visitor"
    assert token not in users.sandbox_id(token)


def test_logins_from_a_file_with_passwords_and_hashes():
    from studio.logins import checker, hash_password, parse_logins
    hashed = hash_password("s3cret", iterations=1000)
    logins = parse_logins(f"# the team\nalice:wonderland\n\nbob:{hashed}\n")
    check = checker(logins)
    assert check("alice", "wonderland") and check("bob", "s3cret")
    assert not check("alice", "s3cret") and not check("bob", hashed) and not check("carol", "x")
    for text, words in (("alice\n", "line 1"), ("a:b\na:c\n", "twice"), ("# nobody\n", "no user"),
                        ("bob:pbkdf2_sha256$x\n", "damaged")):
        with pytest.raises(ValueError, match=words):
            parse_logins(text)


def test_launch_refuses_an_open_address_unless_logins_or_hosted(tmp_path, monkeypatch):
    import launch
    monkeypatch.delenv("SPACE_ID", raising=False)
    monkeypatch.delenv("ALIGNMENT_STUDIO_AUTH", raising=False)
    workspace = ["--workspace", str(tmp_path / "ws")]
    with pytest.raises(SystemExit):
        launch.parse_args(["--host", "0.0.0.0", *workspace])
    users_file = tmp_path / "users.txt"
    users_file.write_text("alice:a\nbob:b\n")
    team = launch.parse_args(["--host", "0.0.0.0", "--auth-file", str(users_file), "--admin", "alice", *workspace])
    assert team.per_user and not team.sandboxes and team.admins == {"alice"} and set(team.logins) == {"alice", "bob"}
    one = launch.parse_args(["--auth", "me:pw", *workspace])
    assert not one.per_user, "one login keeps the one workspace, as before"
    local = launch.parse_args(workspace)
    assert not local.per_user and not local.sandboxes and local.host == "127.0.0.1" and not local.logins
    monkeypatch.setenv("SPACE_ID", "someone/alignment-studio")
    demo = launch.parse_args(["--host", "0.0.0.0", *workspace])
    assert demo.per_user and demo.sandboxes


def test_free_models_frees_only_the_callers_own(tmp_path):
    from pipelines import inference
    mine, theirs = tmp_path / "users" / "user-a", tmp_path / "users" / "user-b"
    saved = dict(inference._cache)
    inference._cache.clear()
    try:
        for key in (f"{mine}/runs/x/final", f"/shared/base|{theirs}/runs/y/final", "/shared/base", "reward|/rm"):
            inference._cache[key] = inference.LoadedBase(model=None, tokenizer=None)
        assert inference.free_models(mine) == 1
        assert set(inference._cache) == {f"/shared/base|{theirs}/runs/y/final", "/shared/base", "reward|/rm"}
        assert inference.free_models() == 3 and not inference._cache
    finally:
        inference._cache.clear()
        inference._cache.update(saved)



def test_user_ids_read_as_their_login_names():
    from pipelines import users
    assert users.display_name(users.user_id("user", "alice")) == "alice"
    assert users.display_name(users.user_id("hf", "alice")) == "alice (Hugging Face)"
    assert users.display_name(users.sandbox_id("t")).startswith("guest ")
