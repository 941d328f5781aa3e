"""Test helpers: a throwaway PKI and a local fake of the OpenAI API."""
