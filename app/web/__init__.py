"""The shop in a browser (`fusionrank web`, and beside Triton in `fusionrank serve`): a FastAPI
app whose page searches with each score explained, recommends from the shopper's session and
reads review sentiment, through the async SDK. app.py builds it, api.py holds its JSON
endpoints, gateway.py its calls to Triton, server.py runs it in a thread, cli.py is the command.
"""

from fusionrank.app.web.cli import COMMANDS

__all__ = ["COMMANDS"]
