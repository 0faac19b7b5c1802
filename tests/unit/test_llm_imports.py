"""`openai` (tens of MiB per worker) is imported only when a real model is first called, and then without
the type modules and transports the raw stream never uses (app/agent/sdk_imports.py)."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from app.agent.llm import model_for
from tests.fake_openai import Turn

ROOT = Path(__file__).resolve().parents[2]


def run_python(code: str, **env) -> str:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("OPENAI_")}
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env={**clean, **env},
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    return result.stdout.strip()


def test_the_demo_model_never_imports_openai():
    code = ("import sys\nfrom app.agent.llm import model_for, ContextItem\n"
            "model = model_for({'DEMO_WORD_DELAY': 0, 'OPENAI_TIMEOUT': 60})\n"
            "list(model.stream('', [ContextItem('user', 'Delete 5 old records from the users table')],"
            " [{'name': 'delete_records'}]))\n"
            "print(type(model).__name__, 'openai' in sys.modules)")
    assert run_python(code) == "DemoModel False"


@pytest.mark.parametrize("api", ["responses", "chat"])
def test_an_app_with_a_model_server_imports_openai_on_the_first_call(tmp_path, fake_model, api):
    fake_model.script(Turn(text="Hi."))
    code = (
        "import sys\nfrom app import create_app\nfrom app.agent.llm import ContextItem\n"
        f"app = create_app({{'TESTING': True, 'SECRET_KEY': 'x', 'RUN_SWEEP_SECONDS': None,"
        f" 'SQLALCHEMY_DATABASE_URI': 'sqlite:///{tmp_path}/app.db',"
        f" 'SQLALCHEMY_BINDS': {{'workspace': 'sqlite:///{tmp_path}/workspace.db'}}}})\n"
        "before = 'openai' in sys.modules\n"
        "model = app.extensions['model']\n"
        "events = list(model.stream('', [ContextItem('user', 'hi')], []))\n"
        "print(before, type(model).__name__, 'openai' in sys.modules, events[0].text)\n"
        # ...without the API's type modules or the aiohttp transport, which stay reachable on demand
        "print(sorted(m for m in sys.modules if m.startswith(('openai.types.graders', 'openai.types.chat',"
        " 'openai.lib._tools', 'aiohttp'))))\n"
        "import openai, pydantic\n"
        "print(openai.types.responses.Response.__name__, openai.types.graders.LabelModelGrader.__name__)\n"
        "class Lookup(pydantic.BaseModel):\n    table: str\n"
        "print(openai.pydantic_function_tool(Lookup)['function']['name'],"
        " openai.lib.type_to_response_format_param(Lookup)['type'])\n"
        "app.extensions['run_executor'].shutdown()")
    out = run_python(code, OPENAI_BASE_URL=fake_model.base_url, OPENAI_API=api).splitlines()
    assert out == [f"False {'ChatModel' if api == 'chat' else 'ResponsesModel'} True Hi.", "[]",
                   "Response LabelModelGrader", "Lookup json_schema"]


def test_model_for_makes_the_client_on_first_use_and_it_can_be_replaced(fake_model):
    model = model_for({"OPENAI_BASE_URL": fake_model.base_url, "OPENAI_API_KEY": "k", "OPENAI_API": "responses",
                       "OPENAI_MODEL": "m", "OPENAI_TIMEOUT": 7.0})
    assert model.label == "m"
    client = model.client
    assert model.client is client and client.timeout == 7.0 and client.max_retries == 1
    model.client = client.with_options(max_retries=0)
    assert model.client is not client and model.client.max_retries == 0
