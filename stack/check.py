"""``python -m stack.check stacks/Pulumi.<stack>.yaml ...``: check stack files offline.

Prints every problem of each file at once (exit 1), or ``ok`` and the secrets still to set.
``python -m stack.check NEW --compared-to OLD`` also says what deploying NEW over a stack
deployed from OLD would delete, replace or retain. Nothing is created, nothing is read from
AWS or a cluster.
"""

from __future__ import annotations

import datetime
import sys
from collections.abc import Sequence

import yaml

from model import EksStack, versions
from stack.budget import budget_warnings
from stack.changes import stack_changes
from stack.load import load_stack_file, unset_secrets
from stack.problems import StackConfigError

_USAGE = (
    "usage: python -m stack.check stacks/Pulumi.<stack>.yaml ...\n"
    "       python -m stack.check stacks/Pulumi.<stack>.yaml --compared-to OLD_STACK_FILE"
)


def _compare(new: str, old: str) -> int:
    try:
        before = load_stack_file(old, require_secrets=False)
        after = load_stack_file(new, require_secrets=False)
    except StackConfigError as error:
        print(f"{error}", file=sys.stderr)
        return 1
    except (OSError, yaml.YAMLError) as error:
        print(f"cannot read: {error}", file=sys.stderr)
        return 1
    changes = stack_changes(before, after)
    for change in changes:
        print(f"{new}: {change}")
    if not changes:
        print(f"{new}: deletes and replaces nothing that {old} deployed")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if args[:1] in (["-h"], ["--help"]):
        print(f"{_USAGE}\n\n{__doc__.split(chr(10), 2)[2] if __doc__ else ''}", end="")
        return 0
    if not args:
        print(_USAGE, file=sys.stderr)
        return 2
    if "--compared-to" in args:
        at = args.index("--compared-to")
        files = args[:at] + args[at + 2 :]
        if at + 1 >= len(args) or len(files) != 1:
            print(_USAGE, file=sys.stderr)
            return 2
        status = main(files)
        return status or _compare(files[0], args[at + 1])
    status = 0
    for name in args:
        try:
            cfg = load_stack_file(name, require_secrets=False)
        except StackConfigError as error:
            print(f"{name}: {error}", file=sys.stderr)
            status = 1
        except (OSError, yaml.YAMLError) as error:
            print(f"{name}: cannot read: {error}", file=sys.stderr)
            status = 1
        else:
            groups = ", ".join(g.name for g in cfg.gpu_node_groups) or "none"
            mode = "eks" if cfg.is_eks else "onprem"
            print(f"{name}: ok ({mode}, cluster {cfg.cluster_name}, GPU groups: {groups})")
            if isinstance(cfg, EksStack):
                pins = versions.pins(cfg.kubernetes_version)
                warning = pins.support_warning(datetime.date.today())
                if warning:
                    print(f"{name}: warning: kubernetesVersion {warning}")
            for budget in budget_warnings(cfg):
                print(f"{name}: warning: {budget}")
            for key in unset_secrets(name):
                print(
                    f"{name}: note: secret {key} is not set yet; before deploying run: "
                    f"pulumi config set --secret {key} ..."
                )
    return status


if __name__ == "__main__":
    raise SystemExit(main())
