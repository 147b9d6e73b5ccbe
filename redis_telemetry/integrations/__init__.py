"""Integrations with other tools. Each is imported on its own (``integrations.litellm``), so the
base package never imports a tool it does not need."""
