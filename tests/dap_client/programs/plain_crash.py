"""A program without trio whose exception escapes it: a file that is not there."""


def load(path: str) -> str:
    with open(path) as file:  # mark: open
        return file.read()


def main() -> None:
    print(load("/no/such/file.txt"))  # mark: call


main()  # mark: main
