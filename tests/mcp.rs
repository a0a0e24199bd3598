//! MCP progress.
