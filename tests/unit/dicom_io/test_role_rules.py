"""A site's own role rules replace the built-in ones, from YAML."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from dicom_io.roles import DEFAULT_RULES, SeriesRole, SeriesSummary, assign_role, load_rules


def test_rules_file_replaces_the_defaults(tmp_path: Path) -> None:
    rules_file = tmp_path / "roles.yaml"
    rules_file.write_text(
        "- {role: T2W_AX, name: site T2, description: '^RECTUM HR', orientation: oblique-axial}\n"
        "- {role: DWI, name: diffusion, min_b_values: 2}\n"
    )
    rules = load_rules(rules_file)
    assert len(rules) == 2
    site_t2 = SeriesSummary("MR", "RECTUM HR 3mm", "ORIGINAL", (), False, (0, 0.2, 0.98), 20)
    role, reason = assign_role(site_t2, rules)
    assert role is SeriesRole.T2W_AX
    assert "site T2" in reason
    vendor_t2 = SeriesSummary("MR", "t2_tse_tra", "ORIGINAL", (), False, (0, 0, 1), 20)
    assert assign_role(vendor_t2, rules)[0] is SeriesRole.IGNORED
    assert assign_role(vendor_t2, DEFAULT_RULES)[0] is SeriesRole.T2W_AX


def test_a_bad_rule_is_refused(tmp_path: Path) -> None:
    rules_file = tmp_path / "roles.yaml"
    rules_file.write_text("- {role: T3W, name: typo}\n")
    with pytest.raises(ValidationError):
        load_rules(rules_file)
