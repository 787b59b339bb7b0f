"""modwatch: a streaming monitor of moderation actions and data exports."""
