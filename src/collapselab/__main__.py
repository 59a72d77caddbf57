from collapselab.cli import app

app(prog_name="collapselab")
