"""Google Calendar connector: OAuth consent, calendar import into entries, export of entries."""
