"""The YAML configuration, parsed once into frozen dataclasses whose errors name the key.
``kit`` is the key-checked reader every section uses (the agent imports it too, so it
must stay free of aiohttp, jwt and prometheus); ``workers`` is a worker entry;
``schema`` is the whole file. Section parsers of other packages plug into ``schema``;
this package must not import the request path or the fleet."""
