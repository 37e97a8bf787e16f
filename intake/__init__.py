"""Alert intake: authenticate → parse → route → dedupe → persist → dispatch."""
