"""The HTTP surface: routes per API family, body parsing and caps, error rendering.
A request enters here and leaves through ``hub.forward``; handlers read the live hub
(``hub.runtime``) and must not reach into workers or upstream connections directly."""
