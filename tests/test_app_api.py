"""The public API contract, through gradio_client against a launched app."""


import pytest

from tests.conftest import free_port, tiny_config, wait_for

CONTRACT = {"start_run", "run_status", "run_metrics", "stop_run", "list_runs", "list_checkpoints", "chat", "score",
            "compare", "vote", "evaluate"}
DATA_ENDPOINTS = {"upload_dataset", "upload_texts", "import_hub_dataset", "list_datasets", "preview_dataset",
                  "dataset_stats", "dataset_table", "save_table", "deduplicate_dataset", "filter_dataset", "split_dataset"}
ROAD_ENDPOINTS = {"start_road", "road_status", "stop_road", "continue_road", "list_roads"}
JOB_ENDPOINTS = {"start_job", "job_status", "cancel_job", "list_jobs", "job_results"}
EXPORT_ENDPOINTS = {"export_model", "export_dataset", "push_to_hub"}
LENS_ENDPOINTS = {"next_tokens", "compare_next_tokens", "pair_logratios", "sample_step"}
ARENA_ENDPOINTS = {"leaderboard", "judge", "label_with_judge", "judge_agreement", "compare_runs", "evaluate_loss"}


@pytest.fixture(scope="module")
def app_url(tmp_path_factory):
    from studio.app import launch_app

    workspace = tmp_path_factory.mktemp("api-workspace")
    from tests.conftest import TINY_ROWS, write_jsonl
    write_jsonl(workspace / "tiny.jsonl", TINY_ROWS)
    port = free_port()
    app = launch_app(workspace, port=port, prevent_thread_lock=True)
    yield app.local_url, workspace
    app.close()


@pytest.fixture(scope="module")
def client(app_url):
    from gradio_client import Client
    return Client(app_url[0], verbose=False)


def test_app_binds_to_loopback_only(app_url):
    assert app_url[0].startswith("http://127.0.0.1:")


def test_only_the_contract_endpoints_are_public(client):
    endpoints = {name.lstrip("/") for name in client.view_api(print_info=False, return_format="dict")["named_endpoints"]}
    assert CONTRACT <= endpoints
    assert not [e for e in endpoints if "lambda" in e or e.startswith("_")], endpoints
    assert endpoints <= CONTRACT | DATA_ENDPOINTS | ROAD_ENDPOINTS | JOB_ENDPOINTS | EXPORT_ENDPOINTS | LENS_ENDPOINTS | ARENA_ENDPOINTS | {"resume_run", "describe_model", "evaluate_reward", "score_dataset", "run_samples", "run_probes", "list_stages"}, endpoints - CONTRACT
    from pipelines import api
    assert endpoints == {fn.__name__ for fn in api.ENDPOINTS}, "every @endpoint of api.py, and nothing else"


def test_start_watch_and_chat_through_the_api(client, app_url, tiny_model):
    run_id = client.predict(tiny_config(tiny_model, max_steps=6), api_name="/start_run")
    status = wait_for(lambda: (s := client.predict(run_id, api_name="/run_status"))["status"] in ("completed", "failed") and s,
                      timeout=120, what="the run to finish")
    assert status["status"] == "completed", status
    assert status["step"] == status["max_steps"] == 6
    assert {"loss", "learning_rate"} <= set(status["last_metrics"])
    metrics = client.predict(run_id, api_name="/run_metrics")
    assert [m["step"] for m in metrics] == [1, 2, 3, 4, 5, 6]
    runs = client.predict(api_name="/list_runs")
    assert runs[0]["run_id"] == run_id and runs[0]["status"] == "completed"
    checkpoints = client.predict(api_name="/list_checkpoints")
    assert "smollm2-135m-instruct" in checkpoints and f"{run_id}/final" in checkpoints and f"{run_id}/checkpoint-5" in checkpoints
    reply = client.predict(f"{run_id}/final", "Say hi", [], {"max_new_tokens": 8, "temperature": 0}, api_name="/chat")
    from pipelines.inference import chat
    assert reply == chat(app_url[1], f"{run_id}/final", "Say hi", [], {"max_new_tokens": 8, "temperature": 0})
    assert client.predict(run_id, api_name="/stop_run")["status"] == "completed"


def test_bad_input_through_the_api_is_one_sentence(client, tiny_model):
    from gradio_client.exceptions import AppError

    for text, words in [("stage: nope", "Unknown stage"), (tiny_config(tiny_model, learning_rate=-1), "learning_rate"),
                        ("name: ../x", "not allowed")]:
        with pytest.raises(AppError) as error:
            client.predict(text, api_name="/start_run")
        assert words in str(error.value)
    with pytest.raises(AppError, match="no run"):
        client.predict("missing-run", api_name="/run_status")
    with pytest.raises(AppError, match="empty"):
        client.predict("smollm2-135m-instruct", "   ", [], {}, api_name="/chat")
    with pytest.raises(AppError, match="language must be one of en, ko"):
        client.predict("fr", api_name="/start_road")
    with pytest.raises(AppError, match="no road"):
        client.predict("missing-road", api_name="/road_status")
    assert client.predict(api_name="/list_roads") == []


def test_data_round_trip_through_the_api(client, tiny_model, tmp_path):
    from gradio_client import handle_file
    from gradio_client.exceptions import AppError

    bad = tmp_path / "prefs.jsonl"
    bad.write_text('{"prompt": "Hi", "chosen": "Hello!", "rejected": "Go away."}\n'
                   '{"prompt": "Bye", "chosen": "", "rejected": "No."}\n', encoding="utf-8")
    report = client.predict(handle_file(str(bad)), "api-prefs", api_name="/upload_dataset")
    assert (report["kind"], report["format"], report["saved"]) == ("preference", "chosen_rejected", False)
    assert report["errors"] == [{"row": 2, "field": "chosen", "message": "missing or empty"}]
    report = client.predict(handle_file(str(bad)), "api-prefs", True, "", api_name="/upload_dataset")
    assert report["saved"] and report["rows"] == 1
    listed = {d["name"]: d for d in client.predict(api_name="/list_datasets")}
    assert listed["api-prefs"]["kind"] == "preference" and listed["api-prefs"]["source"] == "prefs.jsonl"
    rendered = client.predict("api-prefs", str(tiny_model), 1, api_name="/preview_dataset")
    assert "Hello!" in rendered[0]["text"] and "Go away." not in rendered[0]["text"]
    table = client.predict("api-prefs", api_name="/dataset_table")
    assert table == {"kind": "preference", "columns": ["prompt", "chosen", "rejected"], "rows": [["Hi", "Hello!", "Go away."]]}
    saved = client.predict("preference", table["rows"] + [["Sky?", "Blue.", "Green."]], "api-typed", api_name="/save_table")
    assert saved["saved"] and saved["rows"] == 2
    stats = client.predict("api-typed", str(tiny_model), 512, api_name="/dataset_stats")
    assert stats["rows"] == 2 and len(stats["lengths"]) == 2
    split = client.predict("api-typed", "api-typed", 0.5, 1, api_name="/split_dataset")
    assert split["train_rows"] == split["eval_rows"] == 1
    with pytest.raises(AppError, match="Hub is off"):
        client.predict("org/absent", "", "train", "hub", api_name="/import_hub_dataset")
    with pytest.raises(AppError, match="already exists"):
        client.predict(handle_file(str(bad)), "api-prefs", True, "", api_name="/upload_dataset")
    assert client.predict(handle_file(str(bad)), "api-prefs", True, "", True, api_name="/upload_dataset")["saved"]
    for forged in ({"path": "/etc/hostname"}, "/etc/hostname"):   # not uploaded: no other file on the server is read
        with pytest.raises(AppError, match="uploaded|handle_file"):
            client.predict(forged, "stolen", api_name="/upload_dataset")


def test_a_reward_run_started_and_scored_through_the_api(client, app_url, tiny_model):
    from tests.conftest import write_jsonl
    from tests.test_preference_stages import PAIRS, stage_config

    write_jsonl(app_url[1] / "pairs.jsonl", PAIRS)
    run_id = client.predict("name: api-reward\n" + stage_config(tiny_model, "reward", max_steps=12), api_name="/start_run")
    status = wait_for(lambda: (s := client.predict(run_id, api_name="/run_status"))["status"] in ("completed", "failed") and s,
                      timeout=120, what="the reward run")
    assert status["status"] == "completed", status
    assert {"accuracy", "margin", "mean_reward"} <= set(status["last_metrics"])
    good, bad = client.predict(f"{run_id}/final", PAIRS[1]["prompt"], [PAIRS[1]["chosen"], PAIRS[1]["rejected"]],
                               api_name="/score")
    assert good > bad
    settings = {"max_new_tokens": 4, "system_prompt": "Be brief."}
    answers = client.predict([str(tiny_model), str(tiny_model)], "Say hi", settings, api_name="/compare")
    voted = client.predict("api-votes", "Say hi", ["Hi!", "Go away."], [str(tiny_model)] * 2, [1, 2], settings,
                           api_name="/vote")
    assert len(answers) == 2 and voted["added_rows"] == 1
    from pipelines.data.store import load_rows
    assert load_rows("api-votes", app_url[1], "preference")[0]["prompt"] == [
        {"role": "system", "content": "Be brief."}, {"role": "user", "content": "Say hi"}], "the row holds what was asked"


def test_a_dataset_export_reaches_the_client_as_a_file_and_a_push_without_a_token_is_one_sentence(client):
    import pyarrow.parquet as pq
    from gradio_client.exceptions import AppError

    downloaded = client.predict("preference-en-sample", "parquet", api_name="/export_dataset")
    table = pq.read_table(downloaded)
    assert table.num_rows > 0 and {"prompt", "chosen", "rejected"} <= set(table.column_names)
    with pytest.raises(AppError) as refused:   # the server's own token is never lent to a push without one
        client.predict("exports/datasets/preference-en-sample", "someone/prefs", True, "", api_name="/push_to_hub")
    assert "token" in str(refused.value).lower() or "HF_HUB_OFFLINE" in str(refused.value)
