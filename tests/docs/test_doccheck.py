"""The docs' checker refuses what a page must not say, each with a message naming it."""

from __future__ import annotations

import pytest

from tests.docs.doccheck import Checker, Help


def _check(text: str) -> list[str]:
    return [str(p) for p in Checker().check(text, "page.md")]


# -- stack keys ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "span",
    [
        "kubeflow.culling.idleMinutes",
        "kubeflow.culling",
        "gpuNodeGroups[0].amiType",
        "gpuNodeGroups[].placement",
        "kubeflow-eks:kubernetesVersion",
        "aws:region",
        "kubeflow.ingress: load-balancer",
        "registryDockerConfigs.<profile>",
        "notebookImage.image",
        "kubeflow-eks:<key>",
        "kubeflow.trainer.options",  # the Kubeflow SDK's package, declared
        "kubeflow-eks.io/gpu-group",  # a label, not a key
    ],
)
def test_real_keys_and_non_keys_pass(span: str) -> None:
    assert _check(f"Set `{span}` first.\n") == []


@pytest.mark.parametrize(
    "span",
    [
        "kubeflow.culling.idleMinute",
        "kubeflow-eks:region",
        "gpuNodeGroups[].placment",
        "kubeflow-eks:gpu_node_groups",
        "aws:regoin",
        "notebookImage.imag",
        "kubeflow.foo: bar",
    ],
)
def test_a_key_the_model_lacks_is_named(span: str) -> None:
    assert _check(f"Set `{span}` first.\n") == [
        f"page.md:1: `{span}` names no stack key (see docs/stack-reference.md)"
    ]


# -- commands -----------------------------------------------------------------------------


class FakeHelp:
    """Stands in for running ``--help``: records the calls, answers from a table."""

    def __init__(self, answers: dict[tuple[str, ...], Help]) -> None:
        self.answers = answers
        self.calls: list[tuple[str, ...]] = []

    def __call__(self, argv: tuple[str, ...]) -> Help:
        self.calls.append(argv)
        return self.answers.get(argv[-2:], Help(False, "usage: no such command"))


def test_a_project_command_is_run_with_help_and_its_options_must_be_listed() -> None:
    fake = FakeHelp({("stack.check", "--help"): Help(True, "  --compared-to OLD")})
    checker = Checker(help_of=fake)
    text = "```bash\npython -m stack.check a.yaml --compared-to b.yaml   # it's fine\n```\n"
    assert checker.check(text, "page.md") == []
    assert fake.calls[-1][-3:] == ("-m", "stack.check", "--help")
    bad = "Run `python -m stack.check a.yaml --compare-to b.yaml`.\n"
    assert [str(p) for p in checker.check(bad, "page.md")] == [
        "page.md:1: `python -m stack.check a.yaml --compare-to b.yaml`: --compare-to is not"
        " an option of it"
    ]


def test_a_command_whose_help_fails_is_named() -> None:
    problems = Checker(help_of=FakeHelp({})).check("```bash\nfnjob lunch --now\n```\n", "p.md")
    assert [p.message.split(":")[0] for p in problems] == ["`fnjob lunch --now`"]
    assert "--help` fails: usage: no such command" in problems[0].message


def test_real_help_of_the_projects_commands() -> None:
    assert _check("```bash\n./scripts/deploy --preview dev\nfnjob run x.py --gpus 1\n```\n") == []
    assert _check("```bash\n./scripts/deploy --preveiw dev\n```\n") == [
        "page.md:1: `./scripts/deploy --preveiw dev`: --preveiw is not an option of it"
    ]
    assert _check("`./scripts/launch dev`\n") == [
        "page.md:1: `./scripts/launch dev`: there is no scripts/launch"
    ]


def test_outside_programs_are_skipped_by_name_and_unknown_ones_are_problems() -> None:
    fence = "```bash\nexport X=1\npulumi up --yes && aws sts get-caller-identity | cat\n```\n"
    assert _check(fence) == []
    assert _check("```bash\nfrobnicate --all\n```\n") == [
        "page.md:1: `frobnicate --all`: 'frobnicate' is neither a project command nor in the"
        " declared list of outside programs (tests/docs/doccheck.py OUTSIDE)"
    ]


def test_a_benchmark_command_must_exist_and_read_its_options() -> None:
    assert _check("`python benchmarks/bench_render.py --runs 3`\n") == []
    assert "page.md:1: `python benchmarks/bench_nope.py`: there is no benchmarks/bench_nope.py" in (
        _check("`python benchmarks/bench_nope.py`\n")
    )
    assert _check("`python benchmarks/bench_render.py --rounds 3`\n") == [
        "page.md:1: `python benchmarks/bench_render.py --rounds 3`: benchmarks/bench_render.py"
        " does not read --rounds"
    ]


# -- snippets -----------------------------------------------------------------------------


def test_a_python_snippet_that_does_not_compile_is_named() -> None:
    assert _check("```python\nx = [1, 2\n```\n") == [
        "page.md:1: Python does not compile: '[' was never closed (snippet line 1)"
    ]
    assert _check("```bash\npython3 -c 'print(1'\n```\n") == [
        "page.md:1: Python does not compile: '(' was never closed (snippet line 1)"
    ]


def test_fences_need_a_language_and_yaml_must_parse() -> None:
    assert _check("```\nls\n```\n") == [
        "page.md:1: a fenced block without a language (bash, python, text, ...)"
    ]
    assert _check("text\n\n```yaml\na: [1\n```\n")[0].startswith("page.md:3: YAML does not parse")


# -- figures ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "sentence",
    [
        "A cached re-render takes 0.24 s.",
        "It is 1.27x a bare podman run.",
        "The overhead is +20 % over kustomize.",
        "The CLI starts in 291 ms.",
        "The whole command took 1.8 times plain kustomize.",
    ],
)
def test_a_measured_figure_without_its_benchmark_is_named(sentence: str) -> None:
    [problem] = _check(f"Intro.\n\n{sentence}\n")
    assert problem.startswith("page.md:3: figure ")
    assert "with no benchmark script named next to it" in problem


def test_a_figure_next_to_its_benchmark_passes_and_a_missing_benchmark_is_named() -> None:
    assert _check("Decoding took 0.8 s (`benchmarks/bench_result_decode.py`).\n") == []
    assert _check("| build | 84.5 MiB | `bench_build_memory.py` |\n") == []
    assert _check("It took 0.8 s (`benchmarks/bench_gone.py`).\n") == [
        "page.md:1: names benchmarks/bench_gone.py, which does not exist"
    ]
    # A benchmark in the next paragraph does not source this one's figure.
    assert len(_check("It took 0.8 s.\n\nSee `benchmarks/bench_render.py`.\n")) == 1


def test_settings_and_values_in_code_are_not_measurements() -> None:
    assert _check("Jobs stop after 120 s; results are at most 6 MiB; `0.47Gi` and `1.5x`.\n") == []
