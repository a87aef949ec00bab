"""Slack connector: /tt slash command, timer notifications with a Stop button, daily summary."""
