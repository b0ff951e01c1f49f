"""The web console: static pages the gateway serves under /console (agentstream.console.serve).

The pages are plain HTML, CSS and ES modules shipped as package data: nothing is built, bundled or
fetched at run time, so a fresh install serves the same bytes the tests ran against. The pages hold
no authority of their own: they call the run API with the API key a person types in, so the console
sees exactly what that key may see and do."""
