"""Policy pack entry point: `pulumi preview --policy-pack policy` runs this file."""

from pulumi_policy import EnforcementLevel, PolicyPack

from platform_policy.pack import PACK_NAME, policies

PolicyPack(PACK_NAME, policies=policies(), enforcement_level=EnforcementLevel.MANDATORY)
