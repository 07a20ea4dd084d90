"""The package's map and the layout it keeps: the article's files at the bottom, the
package above them, the commands on top, and no import running back up."""
import ast

from conftest import REPO_DIR

ARTICLE_MODULES = ("mnist_loader", "mnist_net", "center_loss", "margin_heads")
PACKAGE = REPO_DIR / "run_machinery"


def project_modules():
    """Module name -> path, for the top level and the package."""
    modules = {path.stem: path for path in REPO_DIR.glob("*.py")}
    modules.update({f"run_machinery.{path.stem}": path for path in PACKAGE.glob("*.py")
                    if path.stem != "__init__"})
    return modules


def project_imports(name, path, modules):
    """The project modules that the module `name` at `path` imports."""
    imported = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            relative = "run_machinery" + (f".{node.module}" if node.module else "")
            base = relative if node.level else node.module
            targets = [base, *(f"{base}.{alias.name}" for alias in node.names)]
        else:
            continue
        imported.update(target for target in targets if target in modules and target != name)
    return imported


def test_the_article_modules_import_no_project_module():
    modules = project_modules()
    for name in ARTICLE_MODULES:
        assert project_imports(name, modules[name], modules) == set(), name


def test_no_module_imports_a_command_and_no_import_runs_in_a_cycle():
    modules = project_modules()
    commands = {name for name, path in modules.items() if "__main__" in path.read_text()}
    assert {"train_mnist_original_center", "evaluate", "compare", "animate", "embed",
            "export"} <= commands
    imports = {name: project_imports(name, path, modules) for name, path in modules.items()}
    for name, imported in imports.items():
        assert not imported & commands, f"{name} imports the command(s) {imported & commands}"
    done, visiting = set(), []

    def visit(name):
        assert name not in visiting, f"an import cycle: {' -> '.join(visiting + [name])}"
        if name not in done:
            visiting.append(name)
            for imported in imports[name]:
                visit(imported)
            visiting.pop()
            done.add(name)

    for name in imports:
        visit(name)


def test_the_top_level_holds_the_article_files_and_the_commands_only():
    modules = project_modules()
    top = {name for name in modules if "." not in name}
    commands = {name for name in top if "__main__" in modules[name].read_text()}
    assert top - commands == {*ARTICLE_MODULES}


def layout_rows():
    """The files docs/layout.md gives a row of its tables: `name.py` -> its line."""
    rows = {}
    for line in (REPO_DIR / "docs" / "layout.md").read_text().splitlines():
        if line.startswith("| `") and ".py` |" in line:
            rows[line.split("`")[1]] = line
    return rows


def test_docs_layout_lists_every_module():
    """docs/layout.md is the one list of the modules: each of the top level and of the
    package has its row, and no row names a module that is gone."""
    files = {path.name for path in REPO_DIR.glob("*.py")}
    files |= {path.name for path in PACKAGE.glob("*.py") if path.stem != "__init__"}
    assert set(layout_rows()) == files


def test_the_package_docstring_points_to_the_list_instead_of_keeping_one():
    doc = ast.get_docstring(ast.parse((PACKAGE / "__init__.py").read_text()))
    assert "docs/layout.md" in doc
    assert not [path.stem for path in PACKAGE.glob("*.py") if f"\n  {path.stem} " in doc]
