"""A model's own chat template, rendered as transformers' ``apply_chat_template`` renders it.

Each family's real template (as published in its ``tokenizer_config.json``) is written into a
model directory here; transformers loads the same directory with ``AutoTokenizer``, and the two
renderings must be equal, character for character.
"""

from __future__ import annotations

import json
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from scratchgpt.data.chat_templates import (
    ChatTemplate,
    ChatTemplateError,
    end_of_turn_ids,
    read_chat_template,
    read_special_tokens,
)

transformers = pytest.importorskip("transformers")
tokenizers = pytest.importorskip("tokenizers")

# meta-llama/Llama-3.2-1B-Instruct, tokenizer_config.json "chat_template".
LLAMA_3_2_TEMPLATE = r"""{{- bos_token }}
{%- if custom_tools is defined %}
    {%- set tools = custom_tools %}
{%- endif %}
{%- if not tools_in_user_message is defined %}
    {%- set tools_in_user_message = true %}
{%- endif %}
{%- if not date_string is defined %}
    {%- if strftime_now is defined %}
        {%- set date_string = strftime_now("%d %b %Y") %}
    {%- else %}
        {%- set date_string = "26 Jul 2024" %}
    {%- endif %}
{%- endif %}
{%- if not tools is defined %}
    {%- set tools = none %}
{%- endif %}

{#- This block extracts the system message, so we can slot it into the right place. #}
{%- if messages[0]['role'] == 'system' %}
    {%- set system_message = messages[0]['content']|trim %}
    {%- set messages = messages[1:] %}
{%- else %}
    {%- set system_message = "" %}
{%- endif %}

{#- System message #}
{{- "<|start_header_id|>system<|end_header_id|>\n\n" }}
{%- if tools is not none %}
    {{- "Environment: ipython\n" }}
{%- endif %}
{{- "Cutting Knowledge Date: December 2023\n" }}
{{- "Today Date: " + date_string + "\n\n" }}
{%- if tools is not none and not tools_in_user_message %}
    {{- "You have access to the following functions. To call a function, please respond with JSON for a function call." }}
    {{- 'Respond in the format {"name": function name, "parameters": dictionary of argument name and its value}.' }}
    {{- "Do not use variables.\n\n" }}
    {%- for t in tools %}
        {{- t | tojson(indent=4) }}
        {{- "\n\n" }}
    {%- endfor %}
{%- endif %}
{{- system_message }}
{{- "<|eot_id|>" }}

{#- Custom tools are passed in a user message with some extra guidance #}
{%- if tools_in_user_message and not tools is none %}
    {#- Extract the first user message so we can plug it in here #}
    {%- if messages | length != 0 %}
        {%- set first_user_message = messages[0]['content']|trim %}
        {%- set messages = messages[1:] %}
    {%- else %}
        {{- raise_exception("Cannot put tools in the first user message when there's no first user message!") }}
{%- endif %}
    {{- '<|start_header_id|>user<|end_header_id|>\n\n' -}}
    {{- "Given the following functions, please respond with a JSON for a function call " }}
    {{- "with its proper arguments that best answers the given prompt.\n\n" }}
    {{- 'Respond in the format {"name": function name, "parameters": dictionary of argument name and its value}.' }}
    {{- "Do not use variables.\n\n" }}
    {%- for t in tools %}
        {{- t | tojson(indent=4) }}
        {{- "\n\n" }}
    {%- endfor %}
    {{- first_user_message + "<|eot_id|>"}}
{%- endif %}

{%- for message in messages %}
    {%- if not (message.role == 'ipython' or message.role == 'tool' or 'tool_calls' in message) %}
        {{- '<|start_header_id|>' + message['role'] + '<|end_header_id|>\n\n'+ message['content'] | trim + '<|eot_id|>' }}
    {%- elif 'tool_calls' in message %}
        {%- if not message.tool_calls|length == 1 %}
            {{- raise_exception("This model only supports single tool-calls at once!") }}
        {%- endif %}
        {%- set tool_call = message.tool_calls[0].function %}
        {{- '<|start_header_id|>assistant<|end_header_id|>\n\n' -}}
        {{- '{"name": "' + tool_call.name + '", ' }}
        {{- '"parameters": ' }}
        {{- tool_call.arguments | tojson }}
        {{- "}" }}
        {{- "<|eot_id|>" }}
    {%- elif message.role == "tool" or message.role == "ipython" %}
        {{- "<|start_header_id|>ipython<|end_header_id|>\n\n" }}
        {%- if message.content is mapping or message.content is iterable %}
            {{- message.content | tojson }}
        {%- else %}
            {{- message.content }}
        {%- endif %}
        {{- "<|eot_id|>" }}
    {%- endif %}
{%- endfor %}
{%- if add_generation_prompt %}
    {{- '<|start_header_id|>assistant<|end_header_id|>\n\n' }}
{%- endif %}
"""  # noqa: E501 (the published template's own lines)

# Qwen/Qwen3-0.6B, tokenizer_config.json "chat_template".
QWEN3_TEMPLATE = r"""{%- if tools %}
    {{- '<|im_start|>system\n' }}
    {%- if messages[0].role == 'system' %}
        {{- messages[0].content + '\n\n' }}
    {%- endif %}
    {{- "# Tools\n\nYou may call one or more functions to assist with the user query.\n\nYou are provided with function signatures within <tools></tools> XML tags:\n<tools>" }}
    {%- for tool in tools %}
        {{- "\n" }}
        {{- tool | tojson }}
    {%- endfor %}
    {{- "\n</tools>\n\nFor each function call, return a json object with function name and arguments within <tool_call></tool_call> XML tags:\n<tool_call>\n{\"name\": <function-name>, \"arguments\": <args-json-object>}\n</tool_call><|im_end|>\n" }}
{%- else %}
    {%- if messages[0].role == 'system' %}
        {{- '<|im_start|>system\n' + messages[0].content + '<|im_end|>\n' }}
    {%- endif %}
{%- endif %}
{%- set ns = namespace(multi_step_tool=true, last_query_index=messages|length - 1) %}
{%- for message in messages[::-1] %}
    {%- set index = (messages|length - 1) - loop.index0 %}
    {%- if ns.multi_step_tool and message.role == "user" and message.content is string and not(message.content.startswith('<tool_response>') and message.content.endswith('</tool_response>')) %}
        {%- set ns.multi_step_tool = false %}
        {%- set ns.last_query_index = index %}
    {%- endif %}
{%- endfor %}
{%- for message in messages %}
    {%- if message.content is string %}
        {%- set content = message.content %}
    {%- else %}
        {%- set content = '' %}
    {%- endif %}
    {%- if (message.role == "user") or (message.role == "system" and not loop.first) %}
        {{- '<|im_start|>' + message.role + '\n' + content + '<|im_end|>' + '\n' }}
    {%- elif message.role == "assistant" %}
        {%- set reasoning_content = '' %}
        {%- if message.reasoning_content is string %}
            {%- set reasoning_content = message.reasoning_content %}
        {%- else %}
            {%- if '</think>' in content %}
                {%- set reasoning_content = content.split('</think>')[0].rstrip('\n').split('<think>')[-1].lstrip('\n') %}
                {%- set content = content.split('</think>')[-1].lstrip('\n') %}
            {%- endif %}
        {%- endif %}
        {%- if loop.index0 > ns.last_query_index %}
            {%- if loop.last or (not loop.last and reasoning_content) %}
                {{- '<|im_start|>' + message.role + '\n<think>\n' + reasoning_content.strip('\n') + '\n</think>\n\n' + content.lstrip('\n') }}
            {%- else %}
                {{- '<|im_start|>' + message.role + '\n' + content }}
            {%- endif %}
        {%- else %}
            {{- '<|im_start|>' + message.role + '\n' + content }}
        {%- endif %}
        {%- if message.tool_calls %}
            {%- for tool_call in message.tool_calls %}
                {%- if (loop.first and content) or (not loop.first) %}
                    {{- '\n' }}
                {%- endif %}
                {%- if tool_call.function %}
                    {%- set tool_call = tool_call.function %}
                {%- endif %}
                {{- '<tool_call>\n{"name": "' }}
                {{- tool_call.name }}
                {{- '", "arguments": ' }}
                {%- if tool_call.arguments is string %}
                    {{- tool_call.arguments }}
                {%- else %}
                    {{- tool_call.arguments | tojson }}
                {%- endif %}
                {{- '}\n</tool_call>' }}
            {%- endfor %}
        {%- endif %}
        {{- '<|im_end|>\n' }}
    {%- elif message.role == "tool" %}
        {%- if loop.first or (messages[loop.index0 - 1].role != "tool") %}
            {{- '<|im_start|>user' }}
        {%- endif %}
        {{- '\n<tool_response>\n' }}
        {{- content }}
        {{- '\n</tool_response>' }}
        {%- if loop.last or (messages[loop.index0 + 1].role != "tool") %}
            {{- '<|im_end|>\n' }}
        {%- endif %}
    {%- endif %}
{%- endfor %}
{%- if add_generation_prompt %}
    {{- '<|im_start|>assistant\n' }}
    {%- if enable_thinking is defined and enable_thinking is false %}
        {{- '<think>\n\n</think>\n\n' }}
    {%- endif %}
{%- endif %}"""  # noqa: E501 (the published template's own lines)

# google/gemma-3-270m-it (as all Gemma 3 instruction-tuned models), "chat_template".
GEMMA3_TEMPLATE = r"""{{ bos_token }}
{%- if messages[0]['role'] == 'system' -%}
    {%- if messages[0]['content'] is string -%}
        {%- set first_user_prefix = messages[0]['content'] + '\n\n' -%}
    {%- else -%}
        {%- set first_user_prefix = messages[0]['content'][0]['text'] + '\n\n' -%}
    {%- endif -%}
    {%- set loop_messages = messages[1:] -%}
{%- else -%}
    {%- set first_user_prefix = "" -%}
    {%- set loop_messages = messages -%}
{%- endif -%}
{%- for message in loop_messages -%}
    {%- if (message['role'] == 'user') != (loop.index0 % 2 == 0) -%}
        {{ raise_exception("Conversation roles must alternate user/assistant/user/assistant/...") }}
    {%- endif -%}
    {%- if (message['role'] == 'assistant') -%}
        {%- set role = "model" -%}
    {%- else -%}
        {%- set role = message['role'] -%}
    {%- endif -%}
    {{ '<start_of_turn>' + role + '\n' + (first_user_prefix if loop.first else "") }}
    {%- if message['content'] is string -%}
        {{ message['content'] | trim }}
    {%- elif message['content'] is iterable -%}
        {%- for item in message['content'] -%}
            {%- if item['type'] == 'image' -%}
                {{ '<start_of_image>' }}
            {%- elif item['type'] == 'text' -%}
                {{ item['text'] | trim }}
            {%- endif -%}
        {%- endfor -%}
    {%- else -%}
        {{ raise_exception("Invalid content type") }}
    {%- endif -%}
    {{ '<end_of_turn>\n' }}
{%- endfor -%}
{%- if add_generation_prompt -%}
    {{'<start_of_turn>model\n'}}
{%- endif -%}
"""

# Each family's special tokens (bos, eos), and the ids of generation_config.json's eos_token_id.
FAMILIES: dict[str, dict[str, Any]] = {
    "llama3": {"template": LLAMA_3_2_TEMPLATE, "bos": "<|begin_of_text|>", "eos": "<|eot_id|>",
               "specials": ["<|begin_of_text|>", "<|end_of_text|>", "<|eom_id|>", "<|eot_id|>"],
               "generation_eos": ["<|end_of_text|>", "<|eom_id|>", "<|eot_id|>"]},
    "qwen3": {"template": QWEN3_TEMPLATE, "bos": None, "eos": "<|im_end|>",
              "specials": ["<|endoftext|>", "<|im_start|>", "<|im_end|>"],
              "generation_eos": ["<|im_end|>", "<|endoftext|>"]},
    "gemma3": {"template": GEMMA3_TEMPLATE, "bos": "<bos>", "eos": "<eos>",
               "specials": ["<pad>", "<eos>", "<bos>", "<start_of_turn>", "<end_of_turn>"],
               "generation_eos": ["<eos>", "<end_of_turn>"]},
}


def write_model_dir(directory: Path, family: str, template_in: str = "config") -> Path:
    """A Hugging Face tokenizer directory of ``family``: a tiny BPE ``tokenizer.json`` with the
    family's special tokens, ``tokenizer_config.json`` (the eos as an AddedToken object, as the
    hub writes it) and ``generation_config.json``; the template in the config's field
    (``template_in="config"``) or in ``chat_template.jinja`` (``"jinja"``)."""
    spec = FAMILIES[family]
    tokenizer = tokenizers.Tokenizer(tokenizers.models.BPE())
    tokenizer.add_special_tokens(spec["specials"])
    directory.mkdir(parents=True, exist_ok=True)
    tokenizer.save(str(directory / "tokenizer.json"))
    config: dict[str, Any] = {
        "tokenizer_class": "PreTrainedTokenizerFast",
        "bos_token": spec["bos"],
        "eos_token": {"__type": "AddedToken", "content": spec["eos"], "lstrip": False,
                      "normalized": False, "rstrip": False, "single_word": False},
    }
    if template_in == "config":
        config["chat_template"] = spec["template"]
    else:
        (directory / "chat_template.jinja").write_text(spec["template"], encoding="utf-8")
    (directory / "tokenizer_config.json").write_text(json.dumps(config), encoding="utf-8")
    vocab = tokenizer.get_vocab()
    eos_ids = [vocab[token] for token in spec["generation_eos"]]
    (directory / "generation_config.json").write_text(
        json.dumps({"eos_token_id": eos_ids if len(eos_ids) > 1 else eos_ids[0]}), encoding="utf-8"
    )
    return directory


@pytest.fixture(scope="module")
def model_dirs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[Path, Any]]:
    """Each family's model directory, and transformers' tokenizer of that directory."""
    dirs = {family: write_model_dir(tmp_path_factory.mktemp(family), family)
            for family in FAMILIES}
    return {family: (directory, transformers.AutoTokenizer.from_pretrained(directory))
            for family, directory in dirs.items()}


def both(model: tuple[Path, Any], messages: list[dict], add_generation_prompt: bool,
         **kwargs: Any) -> tuple[str, str]:
    """(ours, transformers') rendering of ``messages`` with the model directory's template."""
    directory, hf_tokenizer = model
    ours = read_chat_template(directory).render(
        messages, add_generation_prompt=add_generation_prompt, **kwargs)
    theirs = hf_tokenizer.apply_chat_template(
        messages, tokenize=False, add_generation_prompt=add_generation_prompt, **kwargs)
    return ours, theirs


def msg(role: str, content: Any, **fields: Any) -> dict[str, Any]:
    return {"role": role, "content": content, **fields}


SYSTEM_MULTI_TURN = [
    msg("system", "You are terse.  "),
    msg("user", "  What is 2+2?\n"),
    msg("assistant", "4"),
    msg("user", "And 3+3? Answer in ünïcödé, with {{ braces }} and {% tags %}."),
]
MULTI_TURN = SYSTEM_MULTI_TURN[1:]
ENDS_WITH_ANSWER = [*MULTI_TURN, msg("assistant", " 6 ")]


@pytest.mark.parametrize("messages", [MULTI_TURN, SYSTEM_MULTI_TURN, ENDS_WITH_ANSWER,
                                      SYSTEM_MULTI_TURN[:2]])
@pytest.mark.parametrize("add_generation_prompt", [True, False])
@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_each_family_renders_as_transformers(
    model_dirs, family: str, messages, add_generation_prompt: bool
) -> None:
    kwargs = {"date_string": "07 Dec 2026"} if family == "llama3" else {}
    ours, theirs = both(model_dirs[family], messages, add_generation_prompt, **kwargs)
    assert ours == theirs
    assert ours.endswith({"llama3": "<|start_header_id|>assistant<|end_header_id|>\n\n",
                          "qwen3": "<|im_start|>assistant\n",
                          "gemma3": "<start_of_turn>model\n"}[family]) == add_generation_prompt


def test_the_jinja_file_is_read_as_the_config_field_is(tmp_path: Path) -> None:
    in_config = write_model_dir(tmp_path / "config", "gemma3", template_in="config")
    in_file = write_model_dir(tmp_path / "file", "gemma3", template_in="jinja")
    assert "chat_template" not in json.loads((in_file / "tokenizer_config.json").read_text())
    hf_tokenizer = transformers.AutoTokenizer.from_pretrained(in_file)
    ours, theirs = both((in_file, hf_tokenizer), SYSTEM_MULTI_TURN, add_generation_prompt=True)
    assert ours == theirs == read_chat_template(in_config).render(SYSTEM_MULTI_TURN)
    assert read_chat_template(in_file).origin == str(in_file / "chat_template.jinja")


def test_llama3_dates_its_system_header_today(model_dirs) -> None:
    model = model_dirs["llama3"]
    days = {datetime.now().strftime("%d %b %Y")}
    ours, theirs = both(model, SYSTEM_MULTI_TURN, add_generation_prompt=True)
    days.add(datetime.now().strftime("%d %b %Y"))  # the test may straddle midnight
    assert ours == theirs
    assert any(f"Cutting Knowledge Date: December 2023\nToday Date: {day}\n\n" in ours
               for day in days)


WEATHER_TOOL = {"type": "function", "function": {
    "name": "get_weather", "description": "The weather in a city, now.",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}},
                   "required": ["city"]}}}
TOOL_HISTORY = [
    msg("system", "You help."),
    msg("user", "Weather in Zürich and Köln?"),
    msg("assistant", "", tool_calls=[
        {"type": "function", "function": {"name": "get_weather", "arguments": {"city": "Zürich"}}},
        {"type": "function", "function": {"name": "get_weather", "arguments": '{"city": "Köln"}'}},
    ]),
    msg("tool", "12°C, rain"),
    msg("tool", "9°C, sun"),
    msg("assistant", "<think>\nBoth fetched.\n</think>\n\nZürich: 12°C, rain; Köln: 9°C, sun."),
    msg("user", "Thanks!"),
]


@pytest.mark.parametrize("enable_thinking", [True, False, None])
@pytest.mark.parametrize("messages", [SYSTEM_MULTI_TURN, TOOL_HISTORY, TOOL_HISTORY[:-1]])
def test_qwen3_thinks_as_asked_and_renders_its_tool_history(
    model_dirs, enable_thinking, messages
) -> None:
    model = model_dirs["qwen3"]
    kwargs = {} if enable_thinking is None else {"enable_thinking": enable_thinking}
    tools = [WEATHER_TOOL] if messages is not SYSTEM_MULTI_TURN else None
    ours, theirs = both(model, messages, add_generation_prompt=True,
                        tools=tools, **kwargs)
    assert ours == theirs
    assert ours.endswith("<think>\n\n</think>\n\n") == (enable_thinking is False)
    if tools:
        assert '"description": "The weather in a city, now."' in ours
        assert '{"name": "get_weather", "arguments": {"city": "Zürich"}}' in ours


def test_qwen3_reads_reasoning_under_any_of_its_names(model_dirs) -> None:
    model = model_dirs["qwen3"]
    for field in ("reasoning_content", "thinking", "reasoning"):
        messages = [*MULTI_TURN, msg("assistant", "6", **{field: "3+3 is 6."})]
        ours, theirs = both(model, messages, add_generation_prompt=False)
        assert ours == theirs and "<think>\n3+3 is 6.\n</think>\n\n6" in ours


def test_llama3_lists_tools_and_a_tool_call(model_dirs) -> None:
    model = model_dirs["llama3"]
    one_call = TOOL_HISTORY[2]["tool_calls"][:1]
    history = [*TOOL_HISTORY[:2], msg("assistant", "", tool_calls=one_call),
               msg("tool", {"temperature": "12°C"})]
    ours, theirs = both(model, history, add_generation_prompt=True,
                        tools=[WEATHER_TOOL], date_string="07 Dec 2026")
    assert ours == theirs
    assert '{\n    "type": "function",' in ours  # tojson(indent=4), non-ASCII as is
    assert '"parameters": {"city": "Zürich"}}' in ours


@pytest.mark.parametrize("family, messages, kwargs, reason", [
    ("gemma3", [msg("user", "a"), msg("user", "b")], {},
     "Conversation roles must alternate"),
    ("gemma3", [msg("system", "s"), msg("assistant", "a")], {},
     "Conversation roles must alternate"),
    ("gemma3", [msg("user", 5)], {}, "Invalid content type"),
    ("llama3", [msg("system", "s")], {"tools": [WEATHER_TOOL]},
     "Cannot put tools in the first user message"),
    ("llama3", TOOL_HISTORY[:3], {}, "This model only supports single tool-calls"),
])
def test_a_template_that_refuses_raises_on_both_sides(
    tmp_path: Path, family: str, messages, kwargs, reason: str
) -> None:
    directory = write_model_dir(tmp_path, family)
    hf_tokenizer = transformers.AutoTokenizer.from_pretrained(directory)
    with pytest.raises(Exception, match=reason):
        hf_tokenizer.apply_chat_template(messages, tokenize=False, **kwargs)
    with pytest.raises(ChatTemplateError, match=f"refused the messages: {reason}"):
        read_chat_template(directory).render(messages, **kwargs)


def test_gemma3_speaks_as_model_and_folds_the_system_prompt_into_the_first_turn(
    model_dirs
) -> None:
    model = model_dirs["gemma3"]
    blocks = [msg("system", [{"type": "text", "text": "Be terse."}]),
              msg("user", [{"type": "text", "text": " Hi "}, {"type": "image"}]),
              msg("assistant", [{"type": "text", "text": "Hello."}])]
    ours, theirs = both(model, blocks, add_generation_prompt=False)
    assert ours == theirs == (
        "<bos><start_of_turn>user\nBe terse.\n\nHi<start_of_image><end_of_turn>\n"
        "<start_of_turn>model\nHello.<end_of_turn>\n"
    )


def test_named_templates_default_and_on_request(tmp_path: Path) -> None:
    directory = write_model_dir(tmp_path, "qwen3")
    config = json.loads((directory / "tokenizer_config.json").read_text())
    config["chat_template"] = [{"name": "default", "template": QWEN3_TEMPLATE},
                               {"name": "gemma", "template": GEMMA3_TEMPLATE}]
    (directory / "tokenizer_config.json").write_text(json.dumps(config))
    hf_tokenizer = transformers.AutoTokenizer.from_pretrained(directory)
    for name in (None, "gemma"):
        ours = read_chat_template(directory, name).render(MULTI_TURN)
        assert ours == hf_tokenizer.apply_chat_template(
            MULTI_TURN, tokenize=False, add_generation_prompt=True, chat_template=name)
    with pytest.raises(ChatTemplateError, match="no chat template called 'llama'.*default, gemma"):
        read_chat_template(directory, "llama")


def test_a_directory_without_a_template_says_so(tmp_path: Path) -> None:
    directory = write_model_dir(tmp_path, "qwen3")
    config = json.loads((directory / "tokenizer_config.json").read_text())
    del config["chat_template"]
    (directory / "tokenizer_config.json").write_text(json.dumps(config))
    with pytest.raises(ChatTemplateError, match="has no chat template.*prompt style"):
        read_chat_template(directory)
    config["chat_template"] = {"default": "x"}
    (directory / "tokenizer_config.json").write_text(json.dumps(config))
    with pytest.raises(ChatTemplateError, match="tokenizer_config.json: field 'chat_template'"):
        read_chat_template(directory)


def test_special_tokens_as_strings_or_added_token_objects(tmp_path: Path) -> None:
    directory = write_model_dir(tmp_path, "gemma3")
    assert read_special_tokens(directory) == {"bos_token": "<bos>", "eos_token": "<eos>"}
    config = json.loads((directory / "tokenizer_config.json").read_text())
    config["pad_token"] = 0
    (directory / "tokenizer_config.json").write_text(json.dumps(config))
    with pytest.raises(ChatTemplateError, match="field 'pad_token' is 0"):
        read_special_tokens(directory)


def test_a_syntax_error_names_the_file_and_line(tmp_path: Path) -> None:
    (tmp_path / "chat_template.jinja").write_text("hello\n{% for %}\n")
    with pytest.raises(ChatTemplateError, match=r"chat_template.jinja: line 2"):
        read_chat_template(tmp_path)


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_the_end_of_turn_ids_are_the_generation_configs_and_the_eos(
    model_dirs, family: str
) -> None:
    directory, hf_tokenizer = model_dirs[family]
    listed = transformers.GenerationConfig.from_pretrained(directory).eos_token_id
    listed = listed if isinstance(listed, list) else [listed]
    ids = end_of_turn_ids(directory, hf_tokenizer.get_vocab().get)
    assert ids == list(dict.fromkeys([*listed, hf_tokenizer.eos_token_id]))
    stops = {"llama3": {"<|end_of_text|>", "<|eom_id|>", "<|eot_id|>"},
             "qwen3": {"<|im_end|>", "<|endoftext|>"}, "gemma3": {"<eos>", "<end_of_turn>"}}
    assert set(hf_tokenizer.convert_ids_to_tokens(ids)) == stops[family]


def test_end_of_turn_ids_of_a_single_id_and_a_bad_one(tmp_path: Path) -> None:
    directory = write_model_dir(tmp_path, "llama3")
    vocab = tokenizers.Tokenizer.from_file(str(directory / "tokenizer.json")).get_vocab()
    (directory / "generation_config.json").write_text('{"eos_token_id": 1}')
    assert end_of_turn_ids(directory, vocab.get) == [1, vocab["<|eot_id|>"]]
    (directory / "generation_config.json").write_text('{"eos_token_id": "<|eot_id|>"}')
    with pytest.raises(ChatTemplateError, match="generation_config.json: field 'eos_token_id'"):
        end_of_turn_ids(directory, vocab.get)
    (directory / "generation_config.json").unlink()
    with pytest.raises(ChatTemplateError, match="eos_token '<\\|eot_id\\|>' is not in"):
        end_of_turn_ids(directory, {}.get)


@pytest.mark.parametrize("source", [
    "{{ ''.__class__.__mro__[1].__subclasses__() }}",
    "{{ messages.__class__.__init__.__globals__ }}",
    "{{ raise_exception.__globals__['__builtins__'] }}",
    "{% set ns = namespace(__class__=1) %}{{ ns }}",
    "{{ messages.append({'role': 'user'}) }}",
])
def test_the_sandbox_refuses_a_template_that_reaches_python_internals(source: str) -> None:
    template = ChatTemplate(source, origin="evil/chat_template.jinja")
    with pytest.raises(ChatTemplateError,
                       match="the sandbox stopped the chat template of evil/chat_template.jinja"):
        template.render(MULTI_TURN)
    hf_tokenizer = transformers.PreTrainedTokenizerFast(
        tokenizer_object=tokenizers.Tokenizer(tokenizers.models.BPE()))
    with pytest.raises(Exception, match="unsafe|underscore"):  # transformers refuses it too
        hf_tokenizer.apply_chat_template(MULTI_TURN, tokenize=False, chat_template=source)


def test_tojson_is_transformers_own(model_dirs) -> None:
    model = model_dirs["qwen3"]
    source = ("{{ messages[0] | tojson }}|{{ messages[0] | tojson(indent=2) }}|"
              "{{ messages[0] | tojson(separators=(',', ':'), sort_keys=true) }}")
    messages = [msg("user", "<b>é & \"x\"</b>")]
    ours = ChatTemplate(source).render(messages)
    assert ours == model[1].apply_chat_template(
        messages, tokenize=False, add_generation_prompt=True, chat_template=source)
    assert '"<b>é & \\"x\\"</b>"' in ours  # neither HTML-escaped nor ASCII-escaped


def test_indented_blocks_without_dashes_and_extra_special_tokens(tmp_path: Path) -> None:
    """Jinja's block whitespace (trim_blocks, lstrip_blocks) and a model's own named tokens
    (Gemma 3's ``image_token``), as transformers sets them."""
    directory = write_model_dir(tmp_path, "gemma3")
    config = json.loads((directory / "tokenizer_config.json").read_text())
    config["extra_special_tokens"] = {"image_token": "<image_soft_token>"}
    config["chat_template"] = (
        "{% for message in messages %}\n"
        "    {% if message['role'] == 'user' %}\n"
        "  [{{ message['content'] }}] {{ image_token }}\n"
        "    {% endif %}\n"
        "{% endfor %}\n"
        "  {{ eos_token }}\n"
    )
    (directory / "tokenizer_config.json").write_text(json.dumps(config))
    hf_tokenizer = transformers.AutoTokenizer.from_pretrained(directory)
    ours, theirs = both((directory, hf_tokenizer), MULTI_TURN, add_generation_prompt=False)
    assert ours == theirs
    assert ours.startswith("  [  What is 2+2?\n] <image_soft_token>\n  [And")
