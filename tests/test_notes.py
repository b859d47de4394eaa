import multiprocessing
import subprocess

from src.tracking import notes


def _append_many(path, writer, count):
    for i in range(count):
        notes.append(path, f"## entry {writer}-{i}\n\n- line one of {writer}-{i}\n- line two of {writer}-{i}")


def test_append_creates_the_file_with_a_header_and_keeps_earlier_entries(tmp_path):
    path = tmp_path / "sub" / "NOTES.md"
    notes.append(path, "## first\n\n- a")
    notes.append(path, "## second\n\n- b\n")
    text = path.read_text()
    assert text.startswith(notes.HEADER)
    assert text.count("# Notes") == 1
    assert text.index("## first") < text.index("## second")
    assert text.endswith("- b\n\n")


def test_entries_of_processes_appending_at_once_never_interleave(tmp_path):
    path = tmp_path / "NOTES.md"
    context = multiprocessing.get_context("spawn")
    writers = [context.Process(target=_append_many, args=(path, w, 40)) for w in range(3)]
    for writer in writers:
        writer.start()
    for writer in writers:
        writer.join(timeout=60)
        assert writer.exitcode == 0
    text = path.read_text()
    assert text.count("# Notes\n") == 1  # one header: the first writer's
    entries = text.split("## entry ")[1:]
    assert len(entries) == 120
    for entry in entries:
        name = entry.split("\n")[0]
        assert entry == f"{name}\n\n- line one of {name}\n- line two of {name}\n\n"


def test_git_state_names_the_commit_and_a_dirty_tree(tmp_path):
    assert notes.git_state(tmp_path) == "not a git checkout"

    def git(*args):
        subprocess.run(["git", *args], cwd=tmp_path, check=True, capture_output=True)

    git("init", "-q")
    (tmp_path / "a.txt").write_text("one")
    git("add", "a.txt")
    git("-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "first")
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=tmp_path, capture_output=True, text=True)
    assert notes.git_state(tmp_path) == commit.stdout.strip()
    (tmp_path / "a.txt").write_text("two")
    assert notes.git_state(tmp_path) == commit.stdout.strip() + " (dirty)"
