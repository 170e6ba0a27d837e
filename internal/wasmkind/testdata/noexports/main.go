// A WASI program that is not a kind.
package main

func main() { println("hello") }
