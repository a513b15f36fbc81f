"""Real test doubles shared by the suites: `openai_server.OpenAIServer`, a loopback HTTP server
speaking the OpenAI chat-completions API (see its module docstring for usage)."""
