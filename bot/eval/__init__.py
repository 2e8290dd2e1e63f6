"""The evaluation harness (``python -m bot eval ...``): suites of tasks in
YAML run through the real inbound path and conversation as isolated eval
users, each task checked and measured, every result stored in the project's
database, exported, compared with a baseline and charted. See DESIGN.md
section 3 ("Evaluation")."""
