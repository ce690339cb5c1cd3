"""The lab tests share the session's real guests: see ``lab_session`` in tests/conftest.py."""
