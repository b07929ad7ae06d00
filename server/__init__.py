"""The team server: the web UI, Quire's REST API (/api/v1), the OpenAI-compatible endpoint (/v1) on one port,
who is asking (accounts, tokens, a trusted proxy's header), and the MCP server on stdio."""
